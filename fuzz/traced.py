"""Run `mcp-gateway` with tracemalloc on, dumping a snapshot on SIGUSR1: the fuzz
harness's `--trace-memory DIR` starts the gateway through this, to attribute RSS growth.

    python fuzz/traced.py serve --config gateway.yaml     # FUZZ_TRACE_DIR=... FUZZ_TRACE_FRAMES=12

A debugging aid only (tracemalloc slows the process down several times): the product has
no such hook. Snapshots are written as `DIR/snapshot-N.pickle` (compare with
`fuzz/memdiff.py`), each with `DIR/snapshot-N.smaps` (the process's /proc/PID/smaps) and
`DIR/snapshot-N.txt`: traced bytes, their peak since the last snapshot, and the RSS before
and after `malloc_trim(0)` (what glibc held free: fragmentation; the trim stays done).
"""

from __future__ import annotations

import ctypes
import os
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
    # smaps and RSS first: taking the snapshot costs memory of its own.
    (OUT / f"snapshot-{_count}.smaps").write_bytes(Path(f"/proc/{os.getpid()}/smaps").read_bytes())
    before = _rss()
    snapshot = tracemalloc.take_snapshot()
    snapshot.dump(str(OUT / f"snapshot-{_count}.pickle"))
    del snapshot
    traced, peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    # How much of the RSS is memory glibc holds free (fragmentation): what malloc_trim returns.
    untrimmed = _rss()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    trimmed = _rss()
    (OUT / f"snapshot-{_count}.txt").write_text(
        f"traced {traced} peak-since-last {peak} rss-before-snapshot-kib {before} "
        f"rss-after-snapshot-kib {untrimmed} rss-after-malloc_trim-kib {trimmed}\n"
    )
    _count += 1


def _rss() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


signal.signal(signal.SIGUSR1, _dump)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcp_gateway.cli import main  # noqa: E402

sys.argv = ["mcp-gateway", *sys.argv[1:]]
sys.exit(main())
