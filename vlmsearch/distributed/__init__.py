"""Scale-out indexing: the same incremental indexer, with decoding and embedding spread over a
Ray cluster (``vlmsearch index --engine ray``), and the IVF index built from per-worker shards.

Layout, in data-flow order:

* ``options``: :class:`RayOptions`, what the command line and :meth:`Engine.index` pass in
  (no Ray import);
* ``cluster``: connecting to Ray, with messages that say how to fix a failed connection;
* ``workers``: what runs on the cluster: decode with vlmsearch's safe decoder, hash, skip known
  contents, embed (Ray Data ``map_batches`` callables);
* ``executor``: :class:`RayExecutor`, what the one indexer (:mod:`vlmsearch.indexing`) hands the
  files to read: streams per-file results back; the driver records and commits them;
* ``shards``: the IVF index trained once, filled in shards by Ray tasks, merged.

Only ``cluster``, ``workers``, ``executor`` and ``shards`` import Ray, and only when a Ray run
starts: without ``--engine ray`` nothing here is imported.
"""

from .options import RayOptions

__all__ = ["RayOptions"]
