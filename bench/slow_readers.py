"""Clients that ask for large answers and do not read them (issue 12, item 3): the
gateway's RSS while they hold their connections open, and after they close.

Each client sends one `tools/call` for a `--mib` MiB answer on a socket with a 4 KiB
receive buffer and reads nothing for `--hold` seconds; the gateway's RSS is sampled
meanwhile (peak). Then every client reads its answer (served, or refused with -32053 past
`response_buffer_bytes`) and closes; RSS is sampled until it settles.

    python bench/slow_readers.py [--clients 16] [--mib 50] [--hold 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.isolation import fault_upstream
from bench.load import Target, call_body
from bench.procs import Gateway, create_key, write_gateway_config


async def slow_client(
    port: int, key: str, request_id: int, mib: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**14)
    target = Target(f"http://127.0.0.1:{port}/mcp", "big__big", key)
    headers = {**target.headers(name="big__big"), "accept": "application/json"}
    body = call_body(request_id, "big__big", {"mib": mib})
    head = ["POST /mcp HTTP/1.1", f"host: 127.0.0.1:{port}", f"content-length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    return reader, writer


async def read_answer(reader: asyncio.StreamReader) -> str:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = next(int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length"))
    body = await reader.readexactly(length)
    if len(body) > 1024 * 1024:
        return "served"
    answer = json.loads(body)
    return f"refused ({answer['error']['code']})" if "error" in answer else "served"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--hold", type=float, default=20.0)
    args = parser.parse_args()
    upstream = await fault_upstream()
    directory = Path(tempfile.mkdtemp(prefix="slow-readers-"))
    config = write_gateway_config(directory, {"big": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}})
    key = await create_key(config)
    gateway = Gateway(config)
    try:
        await gateway.ready()
        target = Target(gateway.url, "big__big", key)
        async with aiohttp.ClientSession() as session:  # warm: a few answers, read at once
            for i in range(3):
                body = call_body(i, "big__big", {"mib": 1})
                async with session.post(target.url, data=body, headers=target.headers(name="big__big")) as r:
                    await r.read()
        await asyncio.sleep(3)
        idle = gateway.rss_mb()
        clients = [await slow_client(gateway.port, key, 100 + i, args.mib) for i in range(args.clients)]
        peak, end = idle, time.monotonic() + args.hold
        while time.monotonic() < end:
            peak = max(peak, gateway.rss_mb())
            await asyncio.sleep(0.1)
        holding = gateway.rss_mb()
        outcomes = await asyncio.gather(*(read_answer(reader) for reader, _ in clients))
        for _, writer in clients:
            writer.close()
        samples = []
        for _ in range(50):
            await asyncio.sleep(0.2)
            samples.append(gateway.rss_mb())
        after = samples[-1]
        counts = {outcome: outcomes.count(outcome) for outcome in sorted(set(outcomes))}
        print(f"{args.clients} clients x {args.mib} MiB answers, unread for {args.hold:g}s")
        print(f"  gateway RSS idle        {idle:7.0f} MB")
        print(f"  peak while unread       {peak:7.0f} MB")
        print(f"  at the end of the hold  {holding:7.0f} MB")
        print(f"  10 s after they closed  {after:7.0f} MB  ({(after / idle - 1) * 100:+.1f}% of idle)")
        print(f"  answers                 {counts}")
    finally:
        gateway.stop()
        upstream.stop()


if __name__ == "__main__":
    asyncio.run(main())
