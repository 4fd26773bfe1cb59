"""Runs a stdio MCP server as its child and appends every line the gateway sends it to the
file named by WIRETAP_LOG, so a test can see exactly what reached the upstream (a request,
its `notifications/cancelled`) without changing the server.

    python wiretap.py SCRIPT [ARGS...]     # runs SCRIPT with this interpreter
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main() -> int:
    child = subprocess.Popen([sys.executable, *sys.argv[1:]], stdin=subprocess.PIPE)
    assert child.stdin is not None
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    with open(os.environ["WIRETAP_LOG"], "ab", buffering=0) as log:
        for line in sys.stdin.buffer:
            log.write(line)
            try:
                child.stdin.write(line)
                child.stdin.flush()
            except BrokenPipeError:
                break
    child.stdin.close()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
