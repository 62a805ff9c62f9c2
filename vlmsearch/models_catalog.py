"""What ``--model`` can name, for ``vlmsearch models``: a short list for people choosing one
(the shipped bundles and a few recommended open_clip models), everything with ``--all``, and
which files a model needs from the network.

The recommended models' facts (dimension, download size, languages, where open_clip fetches
their weights) are written down here so that listing them, and noticing that one cannot be
downloaded, needs no torch import and no network; a test checks them against open_clip.
Speeds are what docs/benchmarks.md measured on this project's 2-core CPU machine (end-to-end
``vlmsearch index`` of 1,000 Flickr8k photos, ``bench/indexing.py``); models not measured
there have none.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .downloads import WEIGHTS, RemoteFile

SHIPPED_DEFAULT = "flickr8k-mobilenetv2-minilm-e5"
"""The bundle that ships with vlmsearch and needs no download: what a machine without internet
can use right away."""

SPEED_SOURCE = ("docs/benchmarks.md, 1. Indexing throughput: vlmsearch index end to end, "
                "1,000 Flickr8k photos, 2 CPU cores")


@dataclass(frozen=True)
class Recommended:
    """An open_clip model worth suggesting, with what a person choosing needs to know."""

    spec: str
    role: str
    dim: int
    size: int
    """Bytes to download: the float32 checkpoint, parameters × 4 bytes."""
    languages: str
    hub: str
    """open_clip's ``hf_hub`` entry for the weights: ``ORG/REPO/`` or ``ORG/REPO/FILE``."""
    text_tower_repo: str | None = None
    """A Hugging Face text model whose config and tokenizer transformers loads too."""
    images_per_s: float | None = None
    """Indexing speed on this project's 2-core CPU machine (:data:`SPEED_SOURCE`)."""
    notes: str = ""


RECOMMENDED: tuple[Recommended, ...] = (
    Recommended("openclip:ViT-B-32/laion2b_s34b_b79k", "default", 512, 605_187_000, "en",
                "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/", images_per_s=13.52,
                notes="the default for new indexes"),
    Recommended("openclip:MobileCLIP2-S0/dfndr2b", "small and fast", 512, 299_544_000, "en",
                "timm/MobileCLIP2-S0-OpenCLIP/", images_per_s=None,
                notes="half the download of the default; 1.2-1.7× its image speed here"),
    Recommended("openclip:ViT-L-14/datacomp_xl_s13b_b90k", "best quality", 768,
                1_710_466_000, "en", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K/",
                images_per_s=None, notes="79.2% ImageNet zero-shot (the default: 66.6%); about "
                "1/15 of the default's image speed here"),
    Recommended("openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k", "multilingual", 512,
                1_466_000_000, "100+ (XLM-R)",
                "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k/",
                text_tower_repo="xlm-roberta-base", images_per_s=13.52,
                notes="queries in about 100 languages; ViT-B-32's image side, so its speed"),
)
"""Sizes: ViT-B-32, MobileCLIP2-S0 and ViT-L-14 from their parameter counts (151.3M, 74.9M,
427.6M, counted by building each model); the multilingual one from XLM-R base (278M) plus
ViT-B-32's image side (88M), about 1.47 GB."""

SHIPPED_SPEED: dict[str, float] = {SHIPPED_DEFAULT: 25.09}
"""Indexing speed of the shipped bundles, measured like ``Recommended.images_per_s``."""


def recommended(spec: str) -> Recommended | None:
    return next((r for r in RECOMMENDED if r.spec == spec.strip()), None)


def short_list_specs() -> list[str]:
    """The specs ``vlmsearch models`` shows by default, in order."""
    from .encoders.bundle import shipped_bundles

    return [b["spec"] for b in shipped_bundles()] + [r.spec for r in RECOMMENDED]


# --- which languages a model reads --------------------------------------------------------------
MULTILINGUAL_ARCH_WORDS = ("xlm-roberta", "nllb", "mt5", "multilingual")
"""open_clip architectures whose text tower is multilingual (the rest were trained on English
captions)."""


def model_languages(spec: str) -> list[str] | None:
    """The caption languages model ``spec`` was trained for (language tags; ``*`` for about
    every language), or None when unknown. No torch import: bundles say so in bundle.json,
    open_clip models by their text tower."""
    found = _languages(spec.strip())
    return list(found) if found is not None else None


@functools.lru_cache(maxsize=64)
def _languages(spec: str) -> tuple[str, ...] | None:
    found = _find_languages(spec)
    return tuple(found) if found is not None else None


def _find_languages(spec: str) -> list[str] | None:
    from .encoders.bundle import bundle_languages, read_config, resolve_bundle_path

    spec = spec.strip()
    prefix, _, body = spec.partition(":")
    if prefix == "fake":
        return None
    if prefix == "openclip":
        rec = recommended(spec)
        if rec is not None:
            return ["en"] if rec.languages == "en" else ["*"]
        arch = body.split("@")[0]
        if arch.endswith("/random") or (arch.count("/") == 1 and not arch.endswith(".json")):
            arch = arch.rsplit("/", 1)[0]
        if arch.endswith(".json"):
            return _config_languages(Path(arch))
        if any(word in arch.lower() for word in MULTILINGUAL_ARCH_WORDS):
            return ["*"]
        return None if "@" in body or arch.startswith("hf-hub") else ["en"]
    folder = resolve_bundle_path(body if prefix == "bundle" else spec)
    if folder is None:
        return None
    try:
        return bundle_languages(read_config(folder))
    except Exception:  # an unreadable bundle: loading the model reports it
        return None


def _config_languages(config: Path) -> list[str] | None:
    """Languages of an open_clip model config file: multilingual when its Hugging Face text
    tower is (by name, or by the ``model_type`` of a local tower folder), else English."""
    import json

    try:
        text_cfg = json.loads(config.read_text(encoding="utf-8")).get("text_cfg", {})
    except (OSError, ValueError, AttributeError):
        return None
    hf_name = str(text_cfg.get("hf_model_name") or "")
    if not hf_name:
        return ["en"]
    kind = ""
    local = Path(hf_name).expanduser() / "config.json"
    if local.is_file():
        try:
            kind = str(json.loads(local.read_text(encoding="utf-8")).get("model_type", ""))
        except (OSError, ValueError, AttributeError):
            kind = ""
    words = f"{hf_name} {kind}".lower()
    return ["*"] if any(w in words for w in MULTILINGUAL_ARCH_WORDS) else None


def model_for_scripts(scripts: list[str]) -> str | None:
    """A model that reads every one of ``scripts``: a shipped bundle trained for them, else the
    recommended multilingual open_clip model."""
    from .encoders.bundle import shipped_bundles
    from .search.scripts import language_scripts

    bundles = sorted(shipped_bundles(), key=lambda b: b["spec"] != SHIPPED_DEFAULT)
    for b in bundles:  # the default first
        langs = b.get("languages") or []
        if langs and set(scripts) <= language_scripts(langs):
            return str(b["spec"])
    multi = next((r for r in RECOMMENDED if r.languages != "en"), None)
    return multi.spec if multi is not None else None


# --- what a model needs from the network -------------------------------------------------------
def hub_files(hub: str, what: str = WEIGHTS, size: int | None = None) -> RemoteFile:
    """The weights file named by an open_clip ``hf_hub`` entry, ``ORG/REPO/FILE`` or
    ``ORG/REPO/``, with the names open_clip tries in order (a ``.safetensors`` twin first)."""
    repo, filename = os.path.split(hub)
    filename = filename or "open_clip_pytorch_model.bin"
    names: tuple[str, ...] = (filename,)
    if filename == "open_clip_pytorch_model.bin":
        names = ("open_clip_model.safetensors", filename)
    elif filename.endswith((".bin", ".pth")):
        names = (filename[:-4] + ".safetensors", filename)
    return RemoteFile(what, repo=repo, names=names, size=size)


def text_tower_files(repo: str) -> RemoteFile:
    """A transformers text tower's config and tokenizer (a few MB)."""
    return RemoteFile(f"the {repo} tokenizer", repo=repo, names=("config.json",),
                      snapshot=("*.json", "*.model", "*.txt"))


def files_needed(spec: str) -> list[RemoteFile]:
    """The files model ``spec`` downloads on first use (none for bundles, ``fake``, local
    checkpoints and random weights). Recommended models need no torch import to answer."""
    spec = spec.strip()
    if not spec.startswith("openclip:"):
        return []
    rec = recommended(spec)
    if rec is not None:
        files = [hub_files(rec.hub, size=rec.size)]
        if rec.text_tower_repo:
            files.append(text_tower_files(rec.text_tower_repo))
        return files
    from .encoders.openclip import OpenClipSpec, remote_files

    return remote_files(OpenClipSpec.parse(spec.removeprefix("openclip:")))


def offline_hint(spec: str, files: list[RemoteFile] | None = None) -> str:
    """The two ways on when ``spec`` cannot be downloaded here: the shipped model, or fetching
    the weights on a connected machine."""
    from .encoders.bundle import shipped_bundles

    here = next((b for b in shipped_bundles() if b["spec"] == SHIPPED_DEFAULT), None)
    if here is not None and here["available"]:
        first = f"--model {SHIPPED_DEFAULT} works offline now (it ships with vlmsearch)"
    else:
        first = (f"--model {SHIPPED_DEFAULT} ships with vlmsearch and needs no download, once "
                 "its image tower's weights file is in place (`vlmsearch models` says where)")
    files = files if files is not None else files_needed(spec)
    weights = [f for f in files if f.what == WEIGHTS]
    body = spec.removeprefix("openclip:")
    if weights and len(files) == 1:
        name = weights[0].names[0] if weights[0].names else weights[0].label
        second = (f"fetch the weights on a connected machine with `vlmsearch models --download "
                  f"{spec} --to DIR`, copy the file here and use "
                  f"--model openclip:{body}@/path/to/{name}")
    else:
        second = (f"run `vlmsearch models --download {spec}` on a connected machine and copy "
                  "its Hugging Face cache folder (~/.cache/huggingface/hub) here")
    return f"Either {first}, or {second}"


def download_plan(spec: str) -> Any:
    """:func:`vlmsearch.downloads.plan` for a model spec: what is missing here and how big it
    is. Raises :class:`~vlmsearch.errors.OfflineError` when it cannot be fetched."""
    from .downloads import plan

    files = files_needed(spec)
    return plan(spec, files, offline_hint=offline_hint(spec, files))


def fetch_missing(spec: str, files: list[RemoteFile] | None = None,
                  progress: Any = None) -> None:
    """Make sure every file ``spec`` needs is on this machine: nothing to do when all are
    cached (no network), else probe and download them (``progress(done, total)`` in bytes).
    Raises :class:`~vlmsearch.errors.OfflineError` in seconds when they cannot be fetched."""
    from .downloads import fetch, plan

    files = files_needed(spec) if files is None else files
    todo = plan(spec, files, offline_hint=offline_hint(spec, files))
    for file, probed in todo.files:
        fetch(file, probed, progress=progress)


def check_spec(spec: str) -> None:
    """Raise :class:`~vlmsearch.errors.ModelSpecError` now if ``spec`` names no model (an
    unknown architecture or tag, a bundle folder that is not one), before anything is
    downloaded."""
    from .encoders.registry import load_encoder

    if recommended(spec) is not None:
        return
    encoder = load_encoder(spec, device="cpu")  # cheap: checks the spec, loads nothing
    validate = getattr(encoder, "validate", None)
    if validate is not None:
        validate()


def download_model(spec: str, *, to: Path | None = None,
                   on_file: Any = None, progress: Any = None) -> list[Any]:
    """Fetch the files model ``spec`` needs (``vlmsearch models --download``): into the
    Hugging Face cache, where open_clip finds them, or copies in the folder ``to``, to carry to
    a machine without internet. Files already here are not downloaded again (only hashed, or
    copied into ``to``). ``on_file(file, probe)`` is called before each download and
    ``progress(done, total)`` as bytes arrive. Returns a
    :class:`~vlmsearch.downloads.Downloaded` per file."""
    from .downloads import ASKED_PROBE_TIMEOUT, Probe, fetch, find_cached, plan

    check_spec(spec)
    files = files_needed(spec)
    todo = plan(spec, files, offline_hint=offline_hint(spec, files),
                timeout=ASKED_PROBE_TIMEOUT)  # raises OfflineError when it cannot be fetched
    probes = {id(f): p for f, p in todo.files}
    done = []
    for file in files:
        probed = probes.get(id(file))
        if probed is None and find_cached(file) is None:  # pragma: no cover - plan covers it
            probed = Probe(False, "not planned")
        if on_file is not None and probed is not None:
            on_file(file, probed)
        done.append(fetch(file, probed, to=to, progress=progress))
    if spec.startswith("openclip:hf-hub:"):  # its config, here now, may name a text tower
        for file in files_needed(spec)[len(files):]:
            done.append(fetch(file, to=to, progress=progress))
    return done


def spec_for_index(index_dir: Path, model: str | None) -> str:
    """The model an ``index`` run will use: ``model`` if given, else the index's own, else the
    default for new indexes."""
    from .config import DEFAULT_MODEL
    from .store.layout import IndexLayout

    if model:
        return model
    layout = IndexLayout(index_dir)
    if layout.exists():
        try:
            return layout.read_manifest().model_spec
        except Exception:  # an unreadable index: Engine.open reports it properly
            return ""
    return DEFAULT_MODEL


# --- the lists ---------------------------------------------------------------------------------
def short_list() -> list[dict[str, Any]]:
    """The shipped bundles and the recommended open_clip models, with what a person choosing
    needs: role, dimension, download size, languages, whether usable here, dev R@1 (shipped
    bundles), and speed on this project's machine where measured."""
    from .downloads import missing
    from .encoders.bundle import shipped_bundles

    entries: list[dict[str, Any]] = []
    for b in shipped_bundles():
        entries.append({
            **b,
            "role": ("shipped, works offline" if b["spec"] == SHIPPED_DEFAULT else
                     "shipped, multilingual, works offline" if len(b.get("languages") or []) > 1
                     else "shipped"),
            "download_bytes": 0,
            "languages": ", ".join(b.get("languages") or ["en"]),
            "speed": _speed(SHIPPED_SPEED.get(b["spec"])),
        })
    for r in RECOMMENDED:
        files = files_needed(r.spec)
        entries.append({
            "spec": r.spec,
            "kind": "openclip",
            "role": r.role,
            "dim": r.dim,
            "available": not missing(files),
            "download_bytes": r.size,
            "languages": r.languages,
            "dev_metrics": {},
            "speed": _speed(r.images_per_s),
            "notes": r.notes,
        })
    return entries


def _speed(images_per_s: float | None) -> dict[str, Any] | None:
    if images_per_s is None:
        return None
    return {"images_per_s": images_per_s, "source": SPEED_SOURCE}


def list_models() -> list[dict[str, Any]]:
    """Everything: shipped bundles, every open_clip architecture with every pretrained tag,
    and the test encoder."""
    from .encoders.bundle import shipped_bundles

    entries: list[dict[str, Any]] = list(shipped_bundles())
    entries.extend(_openclip_models())
    entries.append({"spec": "fake", "kind": "fake", "dim": 32, "available": True,
                    "notes": "colour-word test encoder, no learning (tests and demos)"})
    return entries


def _openclip_models() -> list[dict[str, Any]]:
    try:
        import open_clip
    except ImportError:  # pragma: no cover - open_clip is a core dependency
        return []
    from .downloads import missing
    from .encoders.openclip import OpenClipSpec, remote_files

    out = []
    for arch in open_clip.list_models():
        cfg = open_clip.get_model_config(arch) or {}
        for tag in open_clip.list_pretrained_tags_by_model(arch):
            here = not missing(remote_files(OpenClipSpec(arch, tag)))
            out.append({
                "spec": f"openclip:{arch}/{tag}",
                "kind": "openclip",
                "dim": cfg.get("embed_dim"),
                "available": here,
                "notes": "" if here else "downloads on first use",
            })
    return out


def weights_cache_hint() -> str:
    """Where downloaded weights live, for messages."""
    from .downloads import hub_cache

    home = os.path.expanduser("~")
    path = str(hub_cache())
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path
