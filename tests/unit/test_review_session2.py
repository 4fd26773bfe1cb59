"""Review of the session's merges (protocol facts, compiled tools, the router split, the body
reader's turns, the scan's lead skip, the audit watcher, introspection shares, admin errors):
what an upstream or a client could do with them, in process."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import anyio
import pytest

from mcp_gateway import jsonrpc
from mcp_gateway.audit.writer import PROBE_EVERY, AuditWriter
from mcp_gateway.errors import AuditUnavailable
from mcp_gateway.oauth.shares import Shares
from mcp_gateway.oauth.verified import TokenRejected
from mcp_gateway.proxy import http11, payload
from mcp_gateway.proxy import upstream as upstream_module
from mcp_gateway.proxy.schemas import CompiledTool
from mcp_gateway.transport import http as http_transport

from .fakes import WAIT, CatalogApplied, ScriptedServer, hotpath, modern_post, tool_call

pytestmark = pytest.mark.anyio


async def _confirm(arguments: dict[str, Any], peer: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": "confirmed"}]}


def _confirm_tool(allowed: list[Any]) -> dict[str, Any]:
    return {
        "name": "confirm",
        "inputSchema": {
            "type": "object",
            "properties": {"sure": {"enum": allowed}},
            "required": ["sure"],
        },
    }


async def test_a_schema_relisted_with_true_where_it_had_1_is_compiled_again_and_checked_as_listed() -> None:
    # Python's == holds True == 1 and False == 0; JSON Schema does not (`enum`, `const`).
    server = ScriptedServer({"confirm": _confirm}, schemas=[_confirm_tool([1])])
    async with hotpath({"files": server}) as gw:
        refused = await gw.router.handle(tool_call("files__confirm", {"sure": True}))
        assert refused["isError"] is True

        upstream = gw.router.upstreams["files"]
        spy = CatalogApplied(gw.router)
        upstream.events = spy
        server.schemas["confirm"] = _confirm_tool([True])
        await server.deliver({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, None)
        with anyio.fail_after(WAIT):
            await spy.applied.wait()
        listed = gw.router.catalog.snapshot.listing("tools")
        assert [t["inputSchema"]["properties"]["sure"] for t in listed if t["name"] == "files__confirm"] == [
            {"enum": [True]}
        ]

        passed = await gw.router.handle(tool_call("files__confirm", {"sure": True}))
        assert passed["content"][0]["text"] == "confirmed"
        wrong = await gw.router.handle(tool_call("files__confirm", {"sure": 1}))
        assert wrong["isError"] is True
        assert len(server.calls()) == 1


async def test_an_upstream_relisting_changed_schemas_in_a_loop_gets_at_most_a_fifth_of_the_loop_for_compiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compiling a rich schema costs ~1 ms of CPU where reading it costs ~10 us: an upstream
    that announces a list change in a loop, each list with new schemas, must not keep the
    gateway compiling most of the time."""
    cost = 0.02
    spent: list[float] = []
    compile_one = CompiledTool.compile.__func__  # type: ignore[attr-defined]

    def costly(cls: type[CompiledTool], tool: dict[str, Any], **options: Any) -> CompiledTool:
        started = time.perf_counter()
        while time.perf_counter() - started < cost:
            pass
        spent.append(time.perf_counter() - started)
        return compile_one(cls, tool, **options)  # type: ignore[no-any-return]

    names = [f"tool{i}" for i in range(4)]
    server = ScriptedServer(dict.fromkeys(names, _confirm))
    async with hotpath({"files": server}) as gw:
        assert gw.router.catalog.tool("files__tool0") is not None
        monkeypatch.setattr(CompiledTool, "compile", classmethod(costly))
        started = time.perf_counter()
        version = 0
        while time.perf_counter() - started < 2.0:
            version += 1
            for name in names:
                server.schemas[name] = {"name": name, "inputSchema": {"type": "object", "description": f"v{version}"}}
            await server.deliver({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, None)
            await anyio.sleep(0.01)
        window = time.perf_counter() - started
        monkeypatch.undo()
    assert len(spent) >= len(names)  # it did compile the changed lists
    assert sum(spent) / window < 0.3, f"compiling took {sum(spent):.2f}s of {window:.2f}s"


# -- the scan's lead skip finds what the token-by-token scan found ---------------------------


def _scan_before(buffer: bytes, chunks: list[int]) -> list[int]:
    """The scan as it was before the lead skip (70b0a64), fed the same chunks."""
    hits: list[int] = []
    scanned = 0
    data = bytearray()
    for size in chunks:
        data += buffer[len(data) : len(data) + size]
        if len(data) < payload.SPLICE_AT:
            continue
        start = max(scanned - payload._OVERLAP, 0)
        for token in payload._WATCH:
            at = data.find(token, start)
            while at >= 0 and len(hits) <= payload.Scan.MAX_HITS:
                if at + len(token) > scanned:
                    hits.append(at)
                at = data.find(token, at + 1)
        scanned = len(data)
    return hits


@pytest.mark.parametrize("seed", range(12))
def test_the_scan_with_its_lead_skip_finds_every_watched_name_the_token_scan_found(seed: int) -> None:
    rng = random.Random(seed)
    pieces = [*payload._WATCH, b"\\", b'"', b"\\u00e9", b"x" * 97, b'"i', b'd"', b"\\u0", b"06"]
    filler = bytearray(b"a" * (payload.SPLICE_AT + 4096))
    for _ in range(rng.randrange(0, 90)):
        at = rng.randrange(len(filler))
        filler[at:at] = rng.choice(pieces)
    buffer = bytes(filler)
    chunks: list[int] = []
    while sum(chunks) < len(buffer):
        chunks.append(rng.choice([1, 2, 5, 11, 12, 13, 4096, 65536, payload.SPLICE_AT]))
    scan = payload.Scan()
    fed = 0
    for size in chunks:
        scan.feed(buffer[fed : fed + size])
        fed += size
    assert sorted(scan.hits) == sorted(_scan_before(buffer, chunks))


# -- a body reader cancelled in its turn leaves the body whole -------------------------------


async def test_a_body_reader_cancelled_while_giving_the_loop_its_turn_loses_no_bytes_and_no_count() -> None:
    response = http11.Response()
    parts = [bytes([i]) * (64 * 1024) for i in range(12)]
    for part in parts:
        response._push(part)
    response._push(None)
    taken: list[bytes] = []
    with anyio.CancelScope() as scope:
        while True:
            if response._handed >= http11.TURN_BYTES:
                scope.cancel()  # the next look gives the loop its turn: cancelled there
            chunk = await response._next()
            assert chunk is not None
            taken.append(chunk)
    assert scope.cancelled_caught
    assert len(taken) == http11.TURN_BYTES // len(parts[0])
    assert response._buffered == sum(len(p) for p in parts) - sum(len(t) for t in taken)
    rest = await response.read()
    assert b"".join(taken) + rest == b"".join(parts)
    assert response._buffered == 0


# -- the audit writer's watcher ----------------------------------------------------------------


class _FlakyStore:
    """An audit store that refuses every write while `refusing`."""

    def __init__(self) -> None:
        self.refusing = False
        self.rows: list[dict[str, Any]] = []

    async def head(self, chain: str) -> tuple[int, str] | None:
        return (self.rows[-1]["chain_seq"], self.rows[-1]["hash"]) if self.rows else None

    async def append(self, rows: list[dict[str, Any]]) -> None:
        if self.refusing:
            raise OSError("disk full")
        self.rows.extend(rows)

    async def probe(self, row: dict[str, Any]) -> None:
        if self.refusing:
            raise OSError("disk full")

    async def aclose(self) -> None:
        pass


async def test_a_writer_made_unhealthy_by_a_commit_is_healthy_again_within_a_probe_every_not_its_idle_interval() -> (
    None
):
    store = _FlakyStore()
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(store, "c", timeout=0.5, probe_interval=60.0)  # type: ignore[arg-type]
        await writer.start(tg)
        await anyio.sleep(0.05)  # the watcher is asleep for the idle interval
        store.refusing = True
        with pytest.raises(AuditUnavailable):
            await writer.append({"ts": time.time(), "kind": "decision", "decision": "allow"})
        assert not writer.healthy
        store.refusing = False  # the store is back; no call comes to tell
        with anyio.fail_after(PROBE_EVERY * 3):
            while not writer.healthy:
                await anyio.sleep(0.02)
        await writer.drain()


# -- a large schema does not hold the loop -----------------------------------------------------


def _wide_tool(name: str, properties: int) -> dict[str, Any]:
    """A schema `_Flat` cannot take (patterns): `jsonschema` checks it, at ~3 us a byte."""
    props = {f"p{i}": {"type": "string", "minLength": 1, "pattern": "^[a-z]+$"} for i in range(properties)}
    return {"name": name, "inputSchema": {"type": "object", "properties": props, "required": ["p0"]}}


async def test_an_upstream_listing_a_large_schema_does_not_hold_the_loop_while_it_is_compiled() -> None:
    gaps: list[float] = []

    async def ticking() -> None:
        last = time.perf_counter()
        while True:
            await anyio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    big = _wide_tool("wide", 6000)  # ~330 KB: about a second of compiling on a busy machine
    started = time.process_time()
    CompiledTool.compile(big)
    alone = time.process_time() - started
    server = ScriptedServer({"wide": _confirm}, schemas=[big])
    async with anyio.create_task_group() as ticker:
        ticker.start_soon(ticking)
        async with hotpath({"files": server}) as gw:
            entry = gw.router.catalog.tool("files__wide")
            assert entry is not None and entry.tool.validator is not None  # checked, all the same
            refused = await gw.router.handle(tool_call("files__wide", {"p0": "A"}))
            assert refused["isError"] is True
        ticker.cancel_scope.cancel()
    assert max(gaps) < max(0.25, alone / 3), f"the loop waited {max(gaps):.2f}s (compiling alone: {alone:.2f}s)"


async def test_a_schema_past_the_compiled_size_is_listed_and_called_unchecked_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(upstream_module, "MAX_SCHEMA_BYTES", 32 * 1024)
    caplog.set_level(logging.WARNING, "mcp_gateway.proxy.upstream")
    wide = _wide_tool("wide", 1000)
    size = len(jsonrpc.dumps(wide["inputSchema"]))
    server = ScriptedServer({"wide": _confirm}, schemas=[wide])
    async with hotpath({"files": server}) as gw:
        entry = gw.router.catalog.tool("files__wide")
        assert entry is not None and entry.tool.validator is None
        result = await gw.router.handle(tool_call("files__wide", {"p0": "A"}))
        assert result["content"][0]["text"] == "confirmed"
    assert [r.getMessage() for r in caplog.records if "arguments are not checked" in r.getMessage()] == [
        f"files: tool 'wide' has an input schema of {size} bytes, more than 32768 the gateway compiles;"
        " arguments are not checked"
    ]


# -- what held -------------------------------------------------------------------------------


async def test_a_name_two_upstreams_reach_after_renaming_is_checked_by_the_schema_of_the_one_that_holds_it() -> None:
    strict = {"name": "b__c", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}}
    loose = {"name": "c", "inputSchema": {"type": "object"}}
    first = ScriptedServer({"b__c": _confirm}, schemas=[strict])
    second = ScriptedServer({"c": _confirm}, schemas=[loose])
    async with hotpath({"a": first, "a__b": second}) as gw:
        entry = gw.router.catalog.tool("a__b__c")
        assert entry is not None and entry.upstream.name == "a" and entry.original == "b__c"
        assert any("collides" in c for c in gw.router.catalog.snapshot.conflicts)
        refused = await gw.router.handle(tool_call("a__b__c", {"n": "not a number"}))
        assert refused["isError"] is True
        passed = await gw.router.handle(tool_call("a__b__c", {"n": 3}))
        assert passed["content"][0]["text"] == "confirmed"
    assert len(first.calls()) == 1 and second.calls() == []


async def test_a_tool_listed_twice_by_one_upstream_is_checked_by_the_definition_it_is_listed_with() -> None:
    strict = {"name": "t", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}}
    loose = {"name": "t", "inputSchema": {"type": "object"}}
    server = ScriptedServer({"t": _confirm})

    async def listing(message: dict[str, Any]) -> dict[str, Any]:
        if message["method"] == "tools/list":
            return {"tools": [strict, loose]}
        return await answer(message)

    answer = server._answer
    server._answer = listing  # type: ignore[method-assign]
    async with hotpath({"files": server}) as gw:
        listed = [t for t in gw.router.catalog.snapshot.listing("tools") if t["name"] == "files__t"]
        assert [t["inputSchema"] for t in listed] == [strict["inputSchema"]]
        refused = await gw.router.handle(tool_call("files__t", {"n": "x"}))
        assert refused["isError"] is True
    assert server.calls() == []


async def test_an_introspection_slot_is_given_back_when_its_question_is_cancelled_or_fails() -> None:
    shares = Shares(total=2, each=1)
    with anyio.CancelScope() as scope, shares.slot("10.0.0.1"):
        assert shares.by_client == {"10.0.0.1": 1}
        with pytest.raises(TokenRejected), shares.slot("10.0.0.1"):  # the same address: past its share
            pass
        scope.cancel()
        await anyio.sleep(1)
    with pytest.raises(RuntimeError), shares.slot("2001:db8::1"):
        with pytest.raises(TokenRejected), shares.slot("2001:db8::2"):  # the same /64
            pass
        raise RuntimeError("the provider failed")
    assert shares.open == 0 and shares.by_client == {}


def test_the_protocol_error_codes_are_those_the_gateway_answered_with_before_they_came_from_the_sdk() -> None:
    from mcp_gateway import protocol

    assert (protocol.HEADER_MISMATCH, protocol.MISSING_REQUIRED_CLIENT_CAPABILITY) == (-32020, -32021)
    assert protocol.UNSUPPORTED_PROTOCOL_VERSION == -32022 and protocol.RESOURCE_NOT_FOUND == -32002
    assert (protocol.PARSE_ERROR, protocol.INVALID_REQUEST, protocol.METHOD_NOT_FOUND) == (-32700, -32600, -32601)
    assert (protocol.INVALID_PARAMS, protocol.INTERNAL_ERROR) == (-32602, -32603)


async def test_param_headers_sent_for_a_tool_whose_schema_mirrors_nothing_cost_no_walk_of_its_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Walking a schema for its `x-mcp-header` annotations costs ~50 ms a MB: a client adding
    a junk `Mcp-Param-*` header to each call must not make the gateway walk one that has none."""
    walks: list[Any] = []
    validate = http_transport.validate_mcp_param_headers

    def counting(schema: Any, arguments: Any, headers: Any) -> Any:
        walks.append(schema)
        return validate(schema, arguments, headers)

    monkeypatch.setattr(http_transport, "validate_mcp_param_headers", counting)
    server = ScriptedServer({"wide": _confirm}, schemas=[_wide_tool("wide", 50)])
    async with hotpath({"files": server}) as gw, gw.client() as http:
        body, headers = modern_post("tools/call", {"name": "files__wide", "arguments": {"p0": "a"}})
        response = await http.post("/mcp", json=body, headers={**headers, "mcp-param-p0": "a", "mcp-param-x": "1"})
        assert response.status_code == 200
        assert response.json()["result"]["content"][0]["text"] == "confirmed"
    assert walks == []
    assert len(server.calls()) == 1


async def test_an_upstream_announcing_list_changes_in_a_loop_gets_its_lists_read_at_most_a_fifth_of_the_time() -> None:
    """Reading a list costs the gateway its parsing (up to 100 pages of `max_response_bytes`)
    even when nothing in it changed: a flood of `list_changed` must not keep it reading."""
    cost = 0.06
    reads: list[float] = []
    server = ScriptedServer({"t": _confirm})
    answer = server._answer

    async def costly(message: dict[str, Any]) -> dict[str, Any]:
        if message["method"] == "tools/list":
            started = time.perf_counter()
            while time.perf_counter() - started < cost:  # as a large list's parsing would
                pass
            reads.append(time.perf_counter() - started)
        return await answer(message)

    server._answer = costly  # type: ignore[method-assign]
    async with hotpath({"files": server}):
        reads.clear()
        started = time.perf_counter()
        while time.perf_counter() - started < 2.0:
            await server.deliver({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, None)
            await anyio.sleep(0.01)
        window = time.perf_counter() - started
    assert len(reads) >= 2  # it did read the lists again
    assert sum(reads) / window < 0.3, f"reading took {sum(reads):.2f}s of {window:.2f}s"
