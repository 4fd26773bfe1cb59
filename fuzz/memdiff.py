"""Compare two tracemalloc snapshots written by `fuzz/traced.py` (the fuzz harness's
`--trace-memory DIR`): where the traced memory grew between them, and how the process's
mappings (heap, glibc arenas, files) grew.

    python fuzz/memdiff.py DIR/snapshot-1.pickle DIR/snapshot-9.pickle [--by lineno|traceback] [--top 30]
"""

from __future__ import annotations

import argparse
import re
import tracemalloc
from pathlib import Path

IGNORE = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]


def smaps(path: Path) -> dict[str, int]:
    """RSS (KiB) by kind of mapping: [heap], anonymous (glibc arenas, mmaps), files, stacks."""
    kinds: dict[str, int] = {}
    name = ""
    for line in path.read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split()
            name = parts[5] if len(parts) > 5 else "[anon]"
            if name.startswith("/"):
                name = "file " + Path(name).name if ".so" in name else "file " + name
        elif line.startswith("Rss:"):
            kinds[name] = kinds.get(name, 0) + int(line.split()[1])
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--by", default="lineno")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    before = tracemalloc.Snapshot.load(args.before).filter_traces(IGNORE)
    after = tracemalloc.Snapshot.load(args.after).filter_traces(IGNORE)
    total_before = sum(s.size for s in before.statistics("filename"))
    total_after = sum(s.size for s in after.statistics("filename"))
    print(f"traced: {total_before / 2**20:.1f} MiB -> {total_after / 2**20:.1f} MiB")
    for stat in after.compare_to(before, args.by)[: args.top]:
        print(f"{stat.size_diff / 1024:+9.0f} KiB {stat.count_diff:+8d} blocks  {stat.traceback.format()[-1].strip()}")
        if args.by == "traceback":
            for line in stat.traceback.format()[:-1][-16:]:
                print("        " + line.strip())
    maps = [Path(p).with_suffix(".smaps") for p in (args.before, args.after)]
    if all(m.exists() for m in maps):
        a, b = smaps(maps[0]), smaps(maps[1])
        print("RSS by mapping (KiB): before -> after")
        for name in sorted(set(a) | set(b), key=lambda n: -(b.get(n, 0) - a.get(n, 0)))[:12]:
            print(f"  {a.get(name, 0):8d} -> {b.get(name, 0):8d}  {name}")
        print(f"  total {sum(a.values())} -> {sum(b.values())}")


if __name__ == "__main__":
    main()
