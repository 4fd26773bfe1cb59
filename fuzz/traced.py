"""Run `mcp-gateway` with tracemalloc on, dumping a snapshot on SIGUSR1: the fuzz
harness's `--trace-memory DIR` starts the gateway through this, to attribute RSS growth.

    python fuzz/traced.py serve --config gateway.yaml     # FUZZ_TRACE_DIR=... FUZZ_TRACE_FRAMES=12

A debugging aid only (tracemalloc slows the process down several times): the product has
no such hook. Snapshots are written as `DIR/snapshot-N.pickle` (compare with
`fuzz/memdiff.py`), each with `DIR/snapshot-N.smaps` (the process's /proc/PID/smaps).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

OUT = Path(os.environ.get("FUZZ_TRACE_DIR", "."))
tracemalloc.start(int(os.environ.get("FUZZ_TRACE_FRAMES", "12")))
_count = 0


def _dump(signum: int, frame: FrameType | None) -> None:
    global _count
    OUT.mkdir(parents=True, exist_ok=True)
    snapshot = tracemalloc.take_snapshot()
    snapshot.dump(str(OUT / f"snapshot-{_count}.pickle"))
    shutil.copyfile(f"/proc/{os.getpid()}/smaps", OUT / f"snapshot-{_count}.smaps")
    traced, peak = tracemalloc.get_traced_memory()
    (OUT / f"snapshot-{_count}.txt").write_text(f"traced {traced} peak {peak}\n")
    _count += 1


signal.signal(signal.SIGUSR1, _dump)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcp_gateway.cli import main  # noqa: E402

sys.argv = ["mcp-gateway", *sys.argv[1:]]
sys.exit(main())
