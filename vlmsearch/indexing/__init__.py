"""Where an index run happens.

* ``plan``: walk the roots and sort every file into unchanged / to (re)read / removed / kept
  because its place could not be reached;
* ``executor``: turns the files to read into per-file results (a vector or a reason): the
  local :class:`LocalExecutor` (decoder threads + one model); the Ray one lives in
  :mod:`vlmsearch.distributed.executor`;
* ``indexer``: :class:`Indexer`, the one loop: plan, record results, commit in checkpoints,
  survive Ctrl-C, count (:class:`IndexReport`);
* ``report``: :class:`IndexReport` and the :class:`Progress` events.
"""

from .indexer import Indexer
from .report import IndexReport, Progress, ProgressCallback, no_progress

__all__ = ["IndexReport", "Indexer", "Progress", "ProgressCallback", "no_progress"]
