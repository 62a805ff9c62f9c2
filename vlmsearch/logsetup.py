"""Where log records go when vlmsearch runs as a command.

The library itself only logs (to ``vlmsearch.*`` loggers) and never configures logging: that
is the application's business. The command line configures it once, at start-up, with
:func:`configure`:

* quiet (the default): nothing from other libraries reaches the terminal. huggingface_hub,
  transformers, open_clip's root-logger errors, Ray, Python warnings: all dropped, because
  each problem that matters reaches the user as one error message instead. vlmsearch's own
  warnings (a degraded but working path, such as a fast query path that could not be
  exported) still show, as one ``warning: ...`` line each.
* ``--verbose``: every record at INFO and above, from every library, with its logger name,
  and the native loggers (ONNX Runtime, Ray's core) at their warning level.

ONNX Runtime's C++ logger writes to stderr directly; :func:`onnx_log_level` is the severity
the sessions use (``vlmsearch.encoders.onnx_text.session_options``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

QUIET_ENV = {
    # libraries that attach their own stderr handlers at import time read these first
    "HF_HUB_VERBOSITY": "critical",
    "TRANSFORMERS_VERBOSITY": "critical",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # progress bars of downloads we did not start (ours draw their own)
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # Ray's C++ core and its driver-side log forwarding
    "RAY_BACKEND_LOG_LEVEL": "fatal",
    # native TensorFlow/absl-style logging some wheels carry
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GLOG_minloglevel": "3",
}
"""Set (unless already set) before any library is imported, in quiet mode."""

LIBRARY_LOGGERS = ("huggingface_hub", "transformers", "sentence_transformers", "urllib3",
                   "httpx", "httpcore", "filelock", "PIL", "timm", "torch", "onnxruntime",
                   "ray", "open_clip", "asyncio", "py.warnings")

_verbose = False
_configured = False
_HANDLER_NAME = "vlmsearch-cli"


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (like logging's last resort), so a
    replaced or captured stderr never leaves a handler writing to a closed stream."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> object:
        return sys.stderr


class _QuietFilter(logging.Filter):
    """Quiet mode: only vlmsearch's own warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("vlmsearch") and record.levelno >= logging.WARNING


class _QuietFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def configure(verbose: bool = False) -> None:
    """Configure logging for a command-line run (idempotent; call before heavy imports)."""
    global _verbose, _configured
    _verbose, _configured = verbose, True
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = _Stderr()
    handler.set_name(_HANDLER_NAME)
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.setLevel(logging.INFO)
    else:
        handler.addFilter(_QuietFilter())
        handler.setFormatter(_QuietFormatter())
        root.setLevel(logging.WARNING)
        for name, value in QUIET_ENV.items():
            os.environ.setdefault(name, value)
    # A handler on the root logger also keeps logging.basicConfig() and the module-level
    # logging.error() calls of some libraries (open_clip) from adding one of their own.
    root.addHandler(handler)
    logging.captureWarnings(True)
    if not verbose:
        warnings.simplefilter("ignore")  # also those printed by C extensions via warnings
    tame_libraries()


def tame_libraries() -> None:
    """Make library loggers that carry their own stderr handler (huggingface_hub and
    transformers add one at import) go through ours instead. Called by :func:`configure` and
    again after a library is imported (cheap; does nothing for libraries not imported, nor
    when :func:`configure` was never called: then logging is the application's)."""
    if not _configured:
        return
    for name in LIBRARY_LOGGERS:
        if name not in logging.Logger.manager.loggerDict:
            continue
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # the library's own stderr handler
                logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.INFO if _verbose else logging.CRITICAL + 1)


def verbose() -> bool:
    """Whether the command line runs with ``--verbose``."""
    return _verbose


def onnx_log_level() -> int:
    """ONNX Runtime's severity for sessions: 3 (errors only) unless ``--verbose`` (2,
    warnings)."""
    return 2 if _verbose else 3
