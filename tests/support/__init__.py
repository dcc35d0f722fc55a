"""What tests, benchmarks and scripts share, repo-side (not in the installed package).

``synthetic``: a QEMU-like vhost-user-blk conversation built from the protocol model;
``tracecheck``: a recorded trace read back for assertions; ``scenarios``: the real stack
run through ``vhtrace record`` (system tests, the demo, benchmarks, ``traces/``);
``migration``: postcopy between two QEMUs over QMP (for ``scenarios``). Benchmarks and
scripts put the repo root on ``sys.path`` to import them.
"""
