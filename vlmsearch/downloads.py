"""Model files from the network: where they come from, whether they are here already, whether
their source can be reached, and fetching them with progress and a checksum.

Nothing here knows about models: :mod:`vlmsearch.models_catalog` and the encoders say which
:class:`RemoteFile` a model needs. The rules a newcomer's first run depends on:

* A file already on this machine is used as it is, with no network access at all.
* A missing file is never fetched blindly. Its source is probed first with one request, no
  retries and a deadline of :data:`PROBE_TIMEOUT` seconds (DNS included), so a machine without
  internet learns it in seconds rather than after a minute of retries; ``HF_HUB_OFFLINE=1``
  (or ``TRANSFORMERS_OFFLINE=1``) skips the probe and counts as offline.
* Downloads go into the Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), where open_clip and transformers find them, or into a folder
  of your choice; the file's SHA-256 is computed and compared with the hub's when it gives one.
  The hub is ``$HF_ENDPOINT`` (default https://huggingface.co).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelUnavailableError, describe

log = logging.getLogger("vlmsearch.downloads")

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT = 3.0
"""Seconds the first request to a model's source may take before the machine counts as
offline, when a model is about to be used."""
ASKED_PROBE_TIMEOUT = 15.0
"""The same when a download was asked for explicitly (``vlmsearch models --download``): a
slow link gets more time there."""

WEIGHTS = "the weights"
"""``RemoteFile.what`` of a model's weights file."""

ByteProgress = Callable[[int, "int | None"], None]
"""``(bytes done, bytes in all or None)``, called as a download goes."""


@dataclass(frozen=True)
class RemoteFile:
    """A file (or a small set of files) a model needs from the network.

    ``repo`` + ``names``: a file on the Hugging Face hub; the first of ``names`` the hub has is
    used (open_clip prefers ``.safetensors`` and falls back to ``.bin``). ``snapshot``: instead
    the files of ``repo`` matching these patterns (a text tower's config and tokenizer), present
    when ``names[0]`` is. ``url``: a plain download from elsewhere, cached in open_clip's
    ``~/.cache/clip``."""

    what: str
    """What it is, for messages: :data:`WEIGHTS`, "the xlm-roberta-base tokenizer", ..."""
    repo: str | None = None
    names: tuple[str, ...] = ()
    url: str | None = None
    snapshot: tuple[str, ...] = ()
    size: int | None = None
    """Approximate size in bytes when known up front (the catalog's figure); the probe gives
    the exact one."""
    sha256_prefix: str | None = None
    """For ``url`` files whose name carries (a prefix of) their SHA-256."""

    @property
    def label(self) -> str:
        if self.url:
            return os.path.basename(urllib.parse.urlparse(self.url).path)
        return f"{self.repo}/{self.names[0]}" if self.names else str(self.repo)

    def urls(self) -> list[str]:
        """Where each candidate name is downloaded from."""
        if self.url:
            return [self.url]
        base = hub_endpoint()
        return [f"{base}/{self.repo}/resolve/main/{urllib.parse.quote(name)}"
                for name in self.names]

    @property
    def host(self) -> str:
        return urllib.parse.urlparse(self.urls()[0]).netloc or "the model hub"


@dataclass(frozen=True)
class Probe:
    """What one request to a file's source said."""

    reachable: bool
    reason: str = ""
    """Why not, for a person ("Name or service not known", "no answer within 3 s")."""
    name: str | None = None
    """The candidate name the hub has."""
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str
    verified: bool
    """Whether the SHA-256 was compared with one the source published (and matched)."""
    source: str
    already_here: bool = False


@dataclass
class Plan:
    """The files a model still needs, each with what its probe said."""

    spec: str
    files: list[tuple[RemoteFile, Probe]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int | None:
        sizes = [p.size or f.size for f, p in self.files]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)


# --- where things are ----------------------------------------------------------------------------
def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, computed the way huggingface_hub does (but now, so
    that a changed environment counts)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def clip_cache() -> Path:
    """open_clip's folder for weights downloaded from plain URLs."""
    return Path(os.path.expanduser("~/.cache/clip"))


def offline_by_environment() -> str | None:
    """The variable that forbids downloads (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``
    set to a true value), or None."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return name
    return None


def find_cached(file: RemoteFile) -> Path | None:
    """The local copy of ``file``, if this machine has one (no network)."""
    if file.url:
        path = clip_cache() / file.label
        return path if path.is_file() else None
    assert file.repo is not None
    folder = hub_cache() / f"models--{file.repo.replace('/', '--')}"
    snapshots = folder / "snapshots"
    if not snapshots.is_dir():
        return None
    revisions: list[str] = []
    ref = folder / "refs" / "main"
    with contextlib.suppress(OSError):
        revisions.append(ref.read_text().strip())
    with contextlib.suppress(OSError):
        revisions.extend(sorted(p.name for p in snapshots.iterdir()))
    for revision in revisions:
        for name in file.names:
            path = snapshots / revision / name
            if path.is_file():
                return path
    return None


def missing(files: Sequence[RemoteFile]) -> list[RemoteFile]:
    return [f for f in files if find_cached(f) is None]


# --- is the source reachable ---------------------------------------------------------------------
class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect answers the question: the hub is there


def probe(file: RemoteFile, timeout: float = PROBE_TIMEOUT) -> Probe:
    """One HEAD request per candidate name, no retries, all within ``timeout`` seconds
    (name resolution included: it runs in a thread that is abandoned at the deadline)."""
    result: list[Probe] = []

    def ask() -> None:
        try:
            result.append(_probe(file, timeout))
        except Exception as exc:  # pragma: no cover - _probe reports what it expects
            result.append(Probe(False, describe(exc)))

    thread = threading.Thread(target=ask, name="vlmsearch-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if result:
        return result[0]
    return Probe(False, f"no answer from {file.host} within {timeout:g} s")


def _probe(file: RemoteFile, timeout: float) -> Probe:
    opener = urllib.request.build_opener(_NoRedirects)
    names = list(file.names) if not file.url else [file.label]
    last = Probe(False, "not found")
    for name, url in zip(names, file.urls(), strict=False):
        request = urllib.request.Request(url, method="HEAD",
                                         headers={"User-Agent": "vlmsearch",
                                                  "Accept-Encoding": "identity"})
        try:
            with opener.open(request, timeout=timeout) as response:
                return _answer(name, response.status, response.headers)
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302, 303, 307, 308):
                return _answer(name, exc.code, exc.headers)
            if exc.code == 404:
                last = Probe(True, f"{file.host} has no {file.repo or ''}/{name}", None)
                continue
            return Probe(True, f"{file.host} answered {exc.code} {exc.reason}", name)
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = getattr(reason, "strerror", None) or str(reason)
            return Probe(False, f"{file.host}: {text}")
        except (OSError, ValueError) as exc:  # timeouts, resets, bad URLs
            text = "no answer in time" if isinstance(exc, TimeoutError) else describe(exc)
            return Probe(False, f"{file.host}: {text}")
    return last


def _answer(name: str, status: int, headers: Any) -> Probe:
    size = headers.get("X-Linked-Size") or (headers.get("Content-Length")
                                            if status < 300 else None)
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").strip('"').removeprefix(
        "W/").strip('"')
    return Probe(True, "", name, int(size) if size and str(size).isdigit() else None,
                 etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None)


# --- planning and fetching -----------------------------------------------------------------------
def plan(spec: str, files: Sequence[RemoteFile], *, offline_hint: str = "",
         timeout: float = PROBE_TIMEOUT) -> Plan:
    """The files of ``files`` this machine lacks, each probed (``timeout`` seconds). Raises
    :class:`~vlmsearch.errors.OfflineError` (one line: what, why, the ways on) when one cannot
    be fetched: offline by the environment, or its source unreachable."""
    from .errors import OfflineError

    result = Plan(spec)
    todo = missing(files)
    if not todo:
        return result
    env = offline_by_environment()
    if env:
        raise OfflineError(_offline_message(spec, todo, f"{env} is set", offline_hint))
    for file in todo:
        answer = probe(file, timeout)
        if not answer.reachable:
            raise OfflineError(_offline_message(
                spec, todo, f"this machine looks offline ({answer.reason})", offline_hint))
        if answer.name is None:
            raise ModelUnavailableError(f"cannot download {file.what} of {spec}: "
                                        f"{answer.reason}")
        result.files.append((file, answer))
    return result


def _offline_message(spec: str, files: Sequence[RemoteFile], why: str, hint: str) -> str:
    sizes = [f.size for f in files]
    size = f", about {human_size(sum(s or 0 for s in sizes))}" if all(sizes) else ""
    what = " and ".join(f.what for f in files)
    return (f"could not download {what} of {spec} (from {files[0].host}{size}): {why}. "
            + hint).strip()


def fetch(file: RemoteFile, probed: Probe | None = None, *, to: Path | None = None,
          progress: ByteProgress | None = None) -> Downloaded:
    """Download ``file`` (into the hub cache, or the folder ``to``) and check its SHA-256.
    A file already in the cache is only hashed."""
    cached = find_cached(file)
    if cached is not None and to is None:
        return Downloaded(cached, cached.stat().st_size, sha256_of(cached), False,
                          str(cached), already_here=True)
    if cached is not None and to is not None:  # a copy to carry elsewhere: no network needed
        import shutil

        to.mkdir(parents=True, exist_ok=True)
        target = to / cached.name
        shutil.copyfile(cached, target)
        if file.snapshot:  # the tokenizer's other files, beside the one that marks it
            import fnmatch

            for other in cached.parent.iterdir():
                if other != cached and any(fnmatch.fnmatch(other.name, pattern)
                                           for pattern in file.snapshot):
                    shutil.copyfile(other, to / other.name)
        return Downloaded(target, target.stat().st_size, sha256_of(target), False,
                          str(cached), already_here=True)
    probed = probed or probe(file)
    if not probed.reachable or probed.name is None:
        raise ModelUnavailableError(f"cannot download {file.what} ({file.label}): "
                                    f"{probed.reason}")
    try:
        if file.url:
            path = _fetch_url(file, to or clip_cache(), progress)
            source = file.url
        else:
            path = _fetch_hub(file, probed.name, to, progress)
            source = f"{hub_endpoint()}/{file.repo}"
    except ModelUnavailableError:
        raise
    except Exception as exc:
        raise ModelUnavailableError(
            f"the download of {file.what} ({file.label}) failed: {describe(exc)}; run the "
            "same command again to retry") from exc
    digest = sha256_of(path)
    expected = probed.sha256 or file.sha256_prefix
    if expected and not digest.startswith(expected):
        for damaged in {path.resolve(), path}:  # the hub cache's blob and its snapshot link
            with contextlib.suppress(OSError):
                damaged.unlink()
        raise ModelUnavailableError(
            f"the download of {file.label} is damaged (SHA-256 {digest[:12]}..., expected "
            f"{expected[:12]}...); it was deleted, run the same command again")
    return Downloaded(path, path.stat().st_size, digest, bool(expected), source)


def _fetch_hub(file: RemoteFile, name: str, to: Path | None,
               progress: ByteProgress | None) -> Path:
    assert file.repo is not None
    from huggingface_hub import hf_hub_download, snapshot_download

    tqdm_class = _tqdm_forwarding(progress)
    with hub_online():
        if file.snapshot:
            folder = snapshot_download(file.repo, allow_patterns=list(file.snapshot),
                                       cache_dir=None if to else hub_cache(), local_dir=to,
                                       endpoint=hub_endpoint(), tqdm_class=tqdm_class)
            return Path(folder) / name
        return Path(hf_hub_download(file.repo, name, cache_dir=None if to else hub_cache(),
                                    local_dir=to, endpoint=hub_endpoint(),
                                    tqdm_class=tqdm_class))


def _fetch_url(file: RemoteFile, folder: Path, progress: ByteProgress | None) -> Path:
    assert file.url is not None
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file.label
    partial = target.with_name(target.name + ".part")
    with urllib.request.urlopen(file.url, timeout=30) as source, open(partial, "wb") as out:
        total = source.headers.get("Content-Length")
        total_n = int(total) if total and total.isdigit() else None
        done = 0
        while chunk := source.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total_n)
    os.replace(partial, target)
    return target


def _tqdm_forwarding(progress: ByteProgress | None) -> Any:
    """A tqdm class for huggingface_hub that draws nothing and reports bytes to
    ``progress``."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Forwarding(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = int(kwargs.get("initial") or 0)
            self._total = kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            if progress is not None and (self._total or 0) > 1024:  # not the tiny files
                progress(self._done, self._total)
            return None

    return Forwarding


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def human_size(n: int | float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "kB") or n >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


# --- keeping libraries off the network -----------------------------------------------------------
@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """While loading a model whose files are all here: huggingface_hub (and transformers,
    which asks it) use the cache without a single request. Otherwise each file would cost a
    request, and on a network that drops packets a 10 s timeout."""
    yield from _hub_offline_mode(True)


@contextlib.contextmanager
def hub_online() -> Iterator[None]:
    """While downloading what the user asked for, even if huggingface_hub was imported with
    ``HF_HUB_OFFLINE`` set (our own probe decided)."""
    yield from _hub_offline_mode(False)


def _hub_offline_mode(value: bool) -> Iterator[None]:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency of open_clip and transformers
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = value
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
