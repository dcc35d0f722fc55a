"""Shared-memory snapshots: guest memory, vrings and inflight areas in the trace.

Theory of operation
-------------------
The recorder keeps a dup of every memory fd the front-end passes (regions of
SET_MEM_TABLE / ADD_MEM_REG, the inflight area, the dirty log) and, when a
trigger fires, copies pages out of them into the trace. The pieces, each with
one job:

* :mod:`.pages` (pure): 4 KiB pages to content hashes and page maps; a map is
  a run list (zero runs, hash blobs) and a later map of the same extent is
  stored as a delta against the earlier one.
* :mod:`.store` (pure): the recorder's bounded index of pages already stored.
* :mod:`.descriptors`, :mod:`.split`, :mod:`.packed`, :mod:`.inflight` (pure):
  bytes in, structures out. Every loop is bounded by the queue size; a hostile
  chain, a loop or an index out of range is a *problem* in the result, never
  an exception or a hang.
* :mod:`.translate` (pure): ring addresses (front-end virtual, guest-physical
  or IOVA) to guest-physical through the memory table.
* :mod:`.triggers` (pure): the ``--snapshot`` language and when it fires.
* :mod:`.plan` (pure): which extents a snapshot captures.
* :mod:`.access` (I/O): the kept fds, read with ``pread`` (never mapped
  writable, and never faulted in: see docs/snapshots.md).
* :mod:`.capture` (I/O): reads extents, hashes pages, writes page, extent and
  snapshot records.
* :mod:`.hold`: a ``before:NAME`` message the relay keeps until its snapshot is written.
* :mod:`.recording`: the glue the recorder thread calls per message.
* :mod:`.tracedata`: the read side: snapshots and pages out of a trace.
* :mod:`.report` (pure): how ``vhtrace rings`` prints what the decoders found.

User documentation: docs/snapshots.md; record layouts: docs/trace-format.md.
"""
