"""The contrastive fusion head: projections of frozen tower features into one shared space.

Each modality has its own head; both end in ``dim`` values that are L2-normalised, so a pair's
score is a cosine. Trained with a symmetric InfoNCE loss and a learnable temperature
(:func:`info_nce`). The shapes are chosen by :class:`HeadConfig`; what we ship was chosen by
measurement on the Flickr8k dev split (see ``docs/fusion-head.md``).

Image side (tower output: a feature map N×C×H×W):

* ``linear`` / ``mlp``: on the globally average-pooled features (optionally square-rooted:
  the MobileNetV2 features are post-ReLU6 and heavy-tailed);
* ``attn``: multi-head attention pooling with learned queries over the H·W positions, plus (by
  default) a linear or MLP branch on the pooled features.

Text side (tower output: token features N×T×D, mask, and their mean):

* ``linear`` / ``mlp``: on the mean of the token features (with the tower's ``extra_layers``,
  the concatenated unit means of the last and of those intermediate layers);
* ``attn``: attention pooling over the tokens, plus a branch on the mean;
* ``tf``: a small transformer over the tokens, then a masked mean, plus a branch on the mean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .towers import TextFeatures


@dataclass
class HeadConfig:
    dim: int = 512
    image_features: int = 1280
    text_features: int = 384
    # image side
    img_arch: str = "linear"  # linear | mlp | attn
    img_norm: str = "none"  # none | sqrt
    img_extra: str = "none"  # none | f96stat (block-13 mean/max/std, standardised, appended)
    img_extra_dim: int = 288
    img_extra_scale: float = 0.3
    img_hidden: int = 1024
    img_layers: int = 1
    img_dropout: float = 0.1
    img_in_drop: float = 0.0
    img_pool_branch: str = "linear"  # with attn: linear | mlp | none
    img_dmodel: int = 512
    img_heads: int = 8
    img_queries: int = 1
    img_positions: int = 49
    # text side
    txt_arch: str = "linear"  # linear | mlp | attn | tf
    txt_hidden: int = 1024
    txt_layers: int = 1
    txt_dropout: float = 0.1
    txt_in_drop: float = 0.0
    txt_mean_branch: str = "linear"  # with attn/tf: linear | mlp
    txt_dmodel: int = 384
    txt_heads: int = 6
    txt_tf_layers: int = 1
    txt_max_tokens: int = 128
    txt_extra_layers: int = 0  # how many intermediate-layer means follow the sentence embedding
    # shared
    temperature: float = 0.07
    members: int = 1
    """Heads trained with different seeds whose unit outputs are concatenated (an ensemble:
    the score becomes the mean of the members' cosines); the bundle's vectors have
    ``dim × members`` values."""
    project_dim: int = 0
    """With an ensemble: project its ``dim × members`` values onto their first
    ``project_dim`` principal directions (fitted on the training images and captions, after
    training) and re-normalise, for smaller vectors; 0 keeps them all."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def out_dim(self) -> int:
        return self.project_dim or self.dim * self.members

    @property
    def image_input(self) -> str:
        """The tower output form this head reads (see ``towers.image_form``)."""
        if self.img_arch == "attn":
            return "map"
        return "pool+f96stat" if self.img_extra == "f96stat" else "pool"

    @property
    def needs_spatial(self) -> bool:
        return self.img_arch == "attn"

    @property
    def needs_tokens(self) -> bool:
        return self.txt_arch in ("attn", "tf")


class MLP(nn.Module):
    """A linear map plus (with ``residual``) a GELU MLP branch."""

    def __init__(self, din: int, dout: int, hidden: int, layers: int, dropout: float,
                 in_drop: float = 0.0) -> None:
        super().__init__()
        self.in_drop = nn.Dropout(in_drop)
        self.lin = nn.Linear(din, dout)
        mods: list[nn.Module] = []
        d = din
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
            d = hidden
        mods.append(nn.Linear(d, dout))
        self.mlp = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_drop(x)
        return self.lin(x) + self.mlp(x)


class AttnPool(nn.Module):
    """Learned-query multi-head attention pooling over a set of positions or tokens."""

    def __init__(self, din: int, dmodel: int, dout: int, *, heads: int, queries: int,
                 dropout: float, positions: int | None = None) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(din)
        self.proj = nn.Linear(din, dmodel)
        self.pos = nn.Parameter(torch.zeros(1, positions, dmodel)) if positions else None
        self.q = nn.Parameter(torch.randn(1, queries, dmodel) * 0.02)
        self.attn = nn.MultiheadAttention(dmodel, heads, dropout=dropout, batch_first=True)
        self.out = nn.Linear(dmodel * queries, dout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.proj(self.ln(x))
        if self.pos is not None:
            h = h + self.pos
        q = self.q.expand(x.shape[0], -1, -1)
        pad = None if mask is None else ~mask
        o, _ = self.attn(q, h, h, key_padding_mask=pad, need_weights=False)
        return self.out(self.drop(o.flatten(1)))


class TokenTransformer(nn.Module):
    """A small pre-norm transformer over token features, then a masked mean."""

    def __init__(self, din: int, dmodel: int, dout: int, *, layers: int, heads: int,
                 dropout: float, max_tokens: int) -> None:
        super().__init__()
        self.proj: nn.Module = nn.Linear(din, dmodel) if din != dmodel else nn.Identity()
        self.pos = nn.Parameter(torch.zeros(1, max_tokens, dmodel))
        layer = nn.TransformerEncoderLayer(dmodel, heads, 2 * dmodel, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dmodel, dout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) + self.pos[:, : x.shape[1]]
        h = self.enc(h, src_key_padding_mask=~mask)
        m = mask.to(h.dtype)[..., None]
        return self.out((h * m).sum(1) / m.sum(1).clamp(min=1))


def _branch(kind: str, din: int, dout: int, hidden: int, layers: int, dropout: float,
            in_drop: float) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "mlp":
        return MLP(din, dout, hidden, layers, dropout, in_drop)
    if kind == "linear":
        return nn.Sequential(nn.Dropout(in_drop), nn.Linear(din, dout))
    raise ValueError(f"unknown head branch {kind!r}")


class ImageHead(nn.Module):
    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        pooled_kind = cfg.img_arch if cfg.img_arch in ("linear", "mlp") else cfg.img_pool_branch
        extra = cfg.img_extra_dim if cfg.img_extra != "none" else 0
        self.pooled = _branch(pooled_kind, cfg.image_features + extra, cfg.dim, cfg.img_hidden,
                              cfg.img_layers, cfg.img_dropout, cfg.img_in_drop)
        # standardisation of the extra statistics, measured on the training set
        self.extra_mean: torch.Tensor
        self.extra_std: torch.Tensor
        self.register_buffer("extra_mean", torch.zeros(extra))
        self.register_buffer("extra_std", torch.ones(extra))
        self.attn = (AttnPool(cfg.image_features, cfg.img_dmodel, cfg.dim, heads=cfg.img_heads,
                              queries=cfg.img_queries, dropout=cfg.img_dropout,
                              positions=cfg.img_positions)
                     if cfg.img_arch == "attn" else None)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """``fmap``: N×C×H×W tower output, or N×C already average-pooled (enough for heads
        without attention pooling), followed by the extra statistics when configured."""
        root = self.cfg.img_norm == "sqrt"
        out: torch.Tensor | None = None
        if self.pooled is not None:
            pooled = fmap.mean(dim=(2, 3)) if fmap.dim() == 4 else fmap
            extra = None
            if self.cfg.img_extra != "none":
                c = self.cfg.image_features
                pooled, extra = pooled[:, :c], pooled[:, c:]
                extra = (extra - self.extra_mean) / self.extra_std * self.cfg.img_extra_scale
            pooled = torch.sqrt(pooled.clamp_min(0)) if root else pooled
            out = self.pooled(pooled if extra is None else torch.cat([pooled, extra], 1))
        if self.attn is not None:
            spatial = fmap.flatten(2).transpose(1, 2)  # N×HW×C
            att = self.attn(torch.sqrt(spatial.clamp_min(0)) if root else spatial)
            out = att if out is None else out + att
        assert out is not None
        return out


class TextHead(nn.Module):
    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mean_kind = cfg.txt_arch if cfg.txt_arch in ("linear", "mlp") else cfg.txt_mean_branch
        mean_width = cfg.text_features * (1 + cfg.txt_extra_layers)
        self.mean = _branch(mean_kind, mean_width, cfg.dim, cfg.txt_hidden,
                            cfg.txt_layers, cfg.txt_dropout, cfg.txt_in_drop)
        self.tokens: nn.Module | None = None
        if cfg.txt_arch == "attn":
            self.tokens = AttnPool(cfg.text_features, cfg.txt_dmodel, cfg.dim,
                                   heads=cfg.txt_heads, queries=1, dropout=cfg.txt_dropout)
        elif cfg.txt_arch == "tf":
            self.tokens = TokenTransformer(cfg.text_features, cfg.txt_dmodel, cfg.dim,
                                           layers=cfg.txt_tf_layers, heads=cfg.txt_heads,
                                           dropout=cfg.txt_dropout, max_tokens=cfg.txt_max_tokens)

    def forward(self, feats: TextFeatures) -> torch.Tensor:
        out: torch.Tensor | None = None
        if self.mean is not None:
            out = self.mean(feats.mean)
        if self.tokens is not None:
            tok = self.tokens(feats.tokens, feats.mask.bool())
            out = tok if out is None else out + tok
        assert out is not None
        return out


class FusionHead(nn.Module):
    """Both heads and the learnable temperature (as ``logit_scale`` = log 1/T)."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = ImageHead(cfg)
        self.text = TextHead(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))

    def encode_image(self, fmap: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(fmap), dim=-1)

    def encode_text(self, feats: TextFeatures) -> torch.Tensor:
        return F.normalize(self.text(feats), dim=-1)


class HeadEnsemble(nn.Module):
    """``members`` fusion heads; each output is the concatenation of the members' unit vectors
    divided by sqrt(members), so it is a unit vector and a cosine between two of them is the
    mean of the members' cosines."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(FusionHead(cfg) for _ in range(cfg.members))
        self.projection: torch.Tensor | None
        if cfg.project_dim:
            self.register_buffer("projection", torch.eye(cfg.dim * cfg.members,
                                                         cfg.project_dim))
        else:
            self.projection = None
        self.project = True
        """Whether to apply ``projection`` (off while fitting it)."""

    def _out(self, parts: list[torch.Tensor]) -> torch.Tensor:
        joined = torch.cat(parts, dim=-1) / math.sqrt(len(parts))
        if self.projection is None or not self.project:
            return joined
        return F.normalize(joined @ self.projection.to(joined.dtype), dim=-1)

    def encode_image(self, fmap: torch.Tensor) -> torch.Tensor:
        return self._out([m.encode_image(fmap) for m in self.members])  # type: ignore[operator]

    def encode_text(self, feats: TextFeatures) -> torch.Tensor:
        return self._out([m.encode_text(feats) for m in self.members])  # type: ignore[operator]

    def fit_projection(self, vectors: torch.Tensor) -> None:
        """Set ``projection`` to the first ``project_dim`` principal directions (uncentred,
        so cosines are kept as well as possible) of unprojected outputs ``vectors``."""
        _, _, vh = torch.linalg.svd(vectors.double(), full_matrices=False)
        assert self.projection is not None
        self.projection.copy_(vh[: self.cfg.project_dim].T.to(self.projection.dtype))


def build_head(cfg: HeadConfig) -> nn.Module:
    """The module a bundle's head weights load into."""
    return HeadEnsemble(cfg) if cfg.members > 1 or cfg.project_dim else FusionHead(cfg)


def info_nce(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, *,
             captions_per_image: int = 1, i2t_weight: float = 0.5,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """Symmetric InfoNCE for unit vectors: ``image`` B×d and ``text`` (B·k)×d, where captions
    ``j·k … j·k+k-1`` describe image ``j``.

    text→image: each caption's positive is its image, the other images are negatives.
    image→text with k > 1: one term per positive caption, with the image's *other* captions
    left out of that term's denominator (they are not negatives); the terms are averaged.
    """
    b, bt = image.shape[0], text.shape[0]
    k = captions_per_image
    if bt != b * k:
        raise ValueError(f"{bt} captions for {b} images with {k} captions each")
    scale = logit_scale.exp().clamp(max=100.0)
    logits = scale * text @ image.T  # (B·k)×B
    owner = torch.arange(bt, device=text.device) // k
    t2i = F.cross_entropy(logits, owner, label_smoothing=label_smoothing)
    by_image = logits.T  # B×(B·k)
    if k == 1:
        i2t = F.cross_entropy(by_image, owner, label_smoothing=label_smoothing)
    else:
        rows = torch.arange(b, device=text.device)
        mine = (torch.arange(bt, device=text.device)[None, :] // k) == rows[:, None]
        terms = []
        for j in range(k):
            others = mine.clone()
            others[rows, rows * k + j] = False
            terms.append(F.cross_entropy(by_image.masked_fill(others, float("-inf")),
                                         rows * k + j, label_smoothing=label_smoothing))
        i2t = torch.stack(terms).mean()
    return (1 - i2t_weight) * t2i + i2t_weight * i2t


class TextPathHead(nn.Module):
    """The head of a bundle's second text path (``text_paths`` in bundle.json): another text
    tower's features into the bundle's existing space, trained against the bundle's fixed
    image vectors (a "locked image" head, as in LiT). ``cfg.dim`` is the bundle's vector
    length; only the ``txt_*`` fields and ``text_features`` are used."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.text = TextHead(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))

    def encode_text(self, feats: TextFeatures) -> torch.Tensor:
        return F.normalize(self.text(feats), dim=-1)
