"""Worker process entry, run with ``runpy.run_path`` in a freshly spawned interpreter.

It imports ``avatar_core`` from this file's own location, so a worker never needs the module name under
which the host imported the pack (ComfyUI imports it by folder name), and never imports the host's nodes.
``PACK_ROOT`` and ``WORKER_ARGS`` are given as globals by :class:`avatar_core.distributed.pool.WorkerPool`.
"""

import sys

sys.path.insert(0, PACK_ROOT)  # noqa: F821 (given by runpy init_globals)
from avatar_core.distributed.pool import worker_main  # noqa: E402

worker_main(**WORKER_ARGS)  # noqa: F821
