"""The open_clip backend: the only module that imports open_clip.

Spec grammar (after the ``openclip:`` prefix)::

    ARCH/TAG            an open_clip architecture with a pretrained tag (downloaded on first use
                        into the Hugging Face cache), e.g. ViT-B-32/laion2b_s34b_b79k
    ARCH@CHECKPOINT     an architecture with weights from a local file (offline use)
    ARCH/TAG@CHECKPOINT the same, preprocessing images as the tag says (for a file that
                        `vlmsearch models --download SPEC --to DIR` fetched elsewhere)
    hf-hub:ORG/REPO     a model published on the Hugging Face hub in open_clip format
    ARCH/random         random weights (deterministic, seed 0): for tests and benchmarks only

ARCH may also be a path to a model-config JSON file (registered with open_clip on the fly).

Weights are never fetched blindly: the files a spec needs (:func:`remote_files`) are looked
up in the cache first and, when missing, their source is probed in seconds before anything
is downloaded (:mod:`vlmsearch.downloads`); a machine without internet gets one message
naming the ways on. Once the files are here, open_clip loads them without network access.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..decode import ImageSpec
from ..downloads import WEIGHTS, RemoteFile
from ..errors import ModelSpecError, ModelUnavailableError, describe

RANDOM_TAG = "random"


@dataclass(frozen=True)
class OpenClipSpec:
    arch: str
    tag: str | None = None
    checkpoint: str | None = None

    @classmethod
    def parse(cls, body: str) -> OpenClipSpec:
        if not body:
            raise ModelSpecError(
                "empty open_clip model: use openclip:ARCH/TAG (e.g. "
                "openclip:ViT-B-32/laion2b_s34b_b79k) or openclip:ARCH@/path/to/checkpoint"
            )
        checkpoint = None
        if "@" in body and not body.startswith("hf-hub:"):
            body, checkpoint = body.rsplit("@", 1)
            checkpoint = os.path.abspath(os.path.expanduser(checkpoint))
        if body.startswith("hf-hub:") or body.endswith(".json") or "/" not in body:
            arch, tag = body, None
        else:
            arch, tag = body.rsplit("/", 1)
        if not arch:
            raise ModelSpecError(f"no architecture in open_clip model {body!r}")
        return cls(arch, tag or None, checkpoint)

    def canonical(self) -> str:
        out = self.arch
        if self.tag:
            out += f"/{self.tag}"
        if self.checkpoint:
            out += f"@{self.checkpoint}"
        return f"openclip:{out}"


def _file_fingerprint(path: str) -> str:
    """Cheap identity of a large weights file: size plus a hash of its first and last MiB."""
    size = os.path.getsize(path)
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return f"{size}-{h.hexdigest()}"


class OpenClipEncoder:
    """An open_clip model as an :class:`~vlmsearch.encoders.base.Encoder`.

    Nothing heavy happens in ``__init__``: the spec is checked, and weights are loaded on first
    use (so ``model_id``, ``dim`` and ``image_spec`` may trigger the load; ``model_id`` does
    not)."""

    def __init__(self, spec: str, body: str, device: str = "auto") -> None:
        self.spec = spec
        self.parsed = OpenClipSpec.parse(body)
        self._device_request = device
        self._model: Any = None
        self._tokenizer: Any = None
        self._image_spec: ImageSpec | None = None
        self._dim: int | None = None
        self._torch_device: Any = None
        self._check_spec()

    # --- identity --------------------------------------------------------------------------
    def _check_spec(self) -> None:
        p = self.parsed
        if p.checkpoint is not None and not os.path.isfile(p.checkpoint):
            raise ModelUnavailableError(
                f"checkpoint file {p.checkpoint} for model {self.spec!r} does not exist; "
                "check the path after '@'"
            )
        if p.arch.endswith(".json") and not os.path.isfile(p.arch):
            raise ModelSpecError(f"model config file {p.arch} does not exist")

    def validate(self) -> None:
        """Raise :class:`ModelSpecError` if open_clip has no such architecture or tag (imports
        open_clip; downloads and loads nothing)."""
        self._pretrained(self._model_name())

    @property
    def model_id(self) -> str:
        p = self.parsed
        arch = p.arch
        if arch.endswith(".json"):
            digest = hashlib.blake2b(Path(arch).read_bytes(), digest_size=8).hexdigest()
            arch = f"{Path(arch).stem}-{digest}"
        if p.checkpoint:
            return f"openclip:{arch}@{_file_fingerprint(p.checkpoint)}"
        return f"openclip:{arch}/{p.tag or ''}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    @property
    def image_spec(self) -> ImageSpec:
        if self._image_spec is None:
            self._load()
        assert self._image_spec is not None
        return self._image_spec

    @property
    def device(self) -> str:
        if self._torch_device is None:
            self._torch_device = _pick(self._device_request)
        return str(self._torch_device.type)

    # --- loading ---------------------------------------------------------------------------
    def _model_name(self) -> str:
        import open_clip

        arch = self.parsed.arch
        if arch.endswith(".json"):
            name = Path(arch).stem
            if name not in open_clip.list_models():
                open_clip.add_model_config(arch)
            return name
        return arch

    def _pretrained(self, name: str) -> str | None:
        import open_clip

        p = self.parsed
        if p.checkpoint:
            return p.checkpoint
        if name.startswith("hf-hub:"):
            return None
        if name not in open_clip.list_models():
            raise ModelSpecError(
                f"open_clip has no architecture {name!r}; `vlmsearch models` lists them"
            )
        if p.tag == RANDOM_TAG:
            return None
        tags = open_clip.list_pretrained_tags_by_model(name)
        if not p.tag:
            hint = f" (available: {', '.join(tags)})" if tags else ""
            raise ModelSpecError(
                f"name the pretrained weights of {name}: openclip:{name}/TAG{hint}, "
                f"or a local file: openclip:{name}@/path/to/checkpoint"
            )
        if p.tag not in tags:
            raise ModelSpecError(
                f"open_clip has no pretrained tag {p.tag!r} for {name} "
                f"(available: {', '.join(tags) or 'none'}); or use a local file: "
                f"openclip:{name}@/path/to/checkpoint"
            )
        return p.tag

    def _load(self) -> None:
        if self._model is not None:
            return
        from ..downloads import find_cached, hub_offline
        from ..models_catalog import fetch_missing

        fetch_missing(self.spec)  # before importing torch: fails in seconds when offline
        import open_clip
        import torch

        name = self._model_name()
        pretrained = self._pretrained(name)
        files = remote_files(self.parsed)
        if self.parsed.arch.startswith("hf-hub:"):  # its config, here now, may name a text tower
            fetch_missing(self.spec, files)
        preprocess: dict[str, Any] = {}
        if self.parsed.tag and self.parsed.tag != RANDOM_TAG:
            pcfg = open_clip.get_pretrained_cfg(name, self.parsed.tag) or {}
            preprocess = {k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                          if pcfg.get(k) is not None}
            weights = next((f for f in files if f.what == WEIGHTS), None)
            found = find_cached(weights) if weights is not None else None
            if found is not None:
                pretrained = str(found)
        device = self._torch_device = self._torch_device or _pick(self._device_request)
        try:
            if pretrained is None:
                torch.manual_seed(0)  # 'random' weights must be the same in every process
            with hub_offline():  # every file is here: no request may wait on the network
                # random weights are random in every tower: a Hugging Face text tower
                # (XLM-R in the multilingual models) must not fetch its pretrained weights
                extra = {"pretrained_text": False} if pretrained is None else {}
                model = open_clip.create_model(name, pretrained=pretrained, device=device,
                                               force_preprocess_cfg=preprocess or None, **extra)
                self._tokenizer = open_clip.get_tokenizer(name)
        except Exception as exc:
            where = hint = ""
            if pretrained and os.path.isfile(pretrained):
                where = f" from {pretrained}"
                hint = ("; the file may be damaged or not an open_clip checkpoint of this "
                        "architecture: delete it and run again to download it anew"
                        if not self.parsed.checkpoint else "")
            raise ModelUnavailableError(
                f"could not load the weights of {self.spec!r}{where}: {describe(exc, 300)}{hint}"
            ) from exc
        from ..logsetup import tame_libraries

        tame_libraries()  # huggingface_hub and transformers bring stderr handlers of their own
        model.eval().requires_grad_(False)
        _reparameterize(model)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", 224)
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._image_spec = ImageSpec(
            size=size,
            resize=size,
            interpolation=str(cfg.get("interpolation", "bicubic")),
            resize_mode=str(cfg.get("resize_mode", "shortest")),
            mean=tuple(cfg.get("mean", ImageSpec.mean)),
            std=tuple(cfg.get("std", ImageSpec.std)),
        )
        with torch.inference_mode():
            probe = model.encode_text(self._tokenizer(["a"]).to(device))
        self._dim = int(probe.shape[-1])
        if device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        self._model = model

    @property
    def text_token_limit(self) -> int:
        self._load()
        return int(getattr(self._tokenizer, "context_length", 77))

    def count_text_tokens(self, text: str) -> int:
        """Tokens ``text`` needs, with start and end markers (truncation happens beyond
        :attr:`text_token_limit`)."""
        self._load()
        encode = getattr(self._tokenizer, "encode", None)
        if encode is None:
            return 0
        return len(encode(text)) + 2

    def export_text_onnx(self, folder: Path) -> dict[str, Any] | None:
        """Export the text side (token ids → embedding) for the fast query path; None when
        this model's tokenizer has no torch-free twin."""
        import torch

        from .onnx_text import MODEL_FILE, export_module

        self._load()
        tok = self._tokenizer
        if (type(tok).__name__ != "SimpleTokenizer" or getattr(tok, "reduction_fn", None)
                or getattr(tok.clean_fn, "__name__", "") != "_clean_lower"):
            return None
        model = self._model

        class TextSide(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
                return self.model.encode_text(input_ids)

        ids = tok(["a photo of a cat", "two dogs"]).to("cpu")
        model.to("cpu")
        try:
            export_module(TextSide(), (ids,), ["input_ids"], folder / MODEL_FILE,
                          {"input_ids": {0: "batch"}, "embedding": {0: "batch"}})
        finally:
            model.to(self._torch_device)
        return {"kind": "clip-bpe", "context_length": int(tok.context_length)}

    # --- encoding --------------------------------------------------------------------------
    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        from .torchutil import inference, pixels_to_tensor, to_unit_numpy

        self._load()
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = pixels_to_tensor(pixels, self.image_spec, self._torch_device)
        with inference(self._torch_device):
            return to_unit_numpy(self._model.encode_image(x))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        from .torchutil import inference, to_unit_numpy

        self._load()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self._tokenizer(list(texts)).to(self._torch_device)
        with inference(self._torch_device):
            return to_unit_numpy(self._model.encode_text(tokens))


def _pick(requested: str) -> Any:
    from .torchutil import pick_device

    return pick_device(requested)


def _reparameterize(model: Any) -> None:
    """Fuse the train-time branches of reparameterizable blocks (MobileCLIP's FastViT and
    MobileOne) for inference, as Apple's MobileCLIP instructions say. Outputs stay the same
    (cosine 0.9999998 on MobileCLIP-S1) and the image side runs 2× faster on a CPU; models
    without such blocks (ViTs, ResNets) are left alone."""
    names = ("fuse", "reparameterize", "switch_to_deploy")
    if not any(hasattr(m, n) for m in model.modules() for n in names):
        return
    from timm.utils import reparameterize_model

    reparameterize_model(model, inplace=True)


def remote_files(parsed: OpenClipSpec) -> list[RemoteFile]:
    """The files open_clip would download for ``parsed``: the pretrained tag's weights, an
    ``hf-hub:`` model's config and weights, and the config and tokenizer of a Hugging Face text
    tower (the multilingual models' XLM-R). None for local checkpoints and random weights."""
    import open_clip

    from ..downloads import find_cached
    from ..models_catalog import hub_files, text_tower_files

    p = parsed
    files: list[RemoteFile] = []
    if p.arch.startswith("hf-hub:"):
        repo = p.arch.removeprefix("hf-hub:").strip("/")
        config = RemoteFile("the model config", repo=repo, names=("open_clip_config.json",))
        files = [config, hub_files(repo + "/")]
        found = find_cached(config)
        text_cfg: dict[str, Any] = {}
        if found is not None:
            import json

            try:
                text_cfg = json.loads(found.read_text(encoding="utf-8"))["model_cfg"]["text_cfg"]
            except (OSError, ValueError, KeyError, TypeError):
                text_cfg = {}
    else:
        if p.arch.endswith(".json"):
            import json

            try:
                cfg = json.loads(Path(p.arch).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cfg = {}
        else:
            cfg = open_clip.get_model_config(p.arch) or {}
        text_cfg = cfg.get("text_cfg", {}) if isinstance(cfg, dict) else {}
        if p.tag and p.tag != RANDOM_TAG and not p.checkpoint:
            pcfg = open_clip.get_pretrained_cfg(p.arch, p.tag) or {}
            if pcfg.get("hf_hub"):
                files.append(hub_files(str(pcfg["hf_hub"])))
            elif pcfg.get("url"):
                url = str(pcfg["url"])
                filename = os.path.basename(url)
                prefix = None
                if "openaipublic" in url:
                    prefix = url.split("/")[-2]
                elif "mlfoundations" in url:
                    prefix = os.path.splitext(filename)[0].split("-")[-1]
                files.append(RemoteFile(WEIGHTS, url=url, sha256_prefix=prefix or None))
    tokenizer = text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")
    if tokenizer and not Path(str(tokenizer)).expanduser().is_dir():  # a local folder: here
        files.append(text_tower_files(str(tokenizer)))
    return files


def known_architectures() -> list[dict[str, Any]]:
    """open_clip architectures with their pretrained tags and embedding dims."""
    import open_clip

    out = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        out.append({
            "arch": name,
            "tags": list(open_clip.list_pretrained_tags_by_model(name)),
            "dim": cfg.get("embed_dim"),
        })
    return out

