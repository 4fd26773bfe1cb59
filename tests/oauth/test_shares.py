"""The introspection slots in one process: each client address holds at most its share of
the open questions, a question past it costs the provider nothing, and every slot comes
back however the question ends (answer, error, timeout, cancellation), leaving no entry."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pytest
from anyio import wait_all_tasks_blocked
from pydantic import ValidationError

from mcp_gateway.oauth.introspection import IntrospectionSettings, Introspector
from mcp_gateway.oauth.shares import UNKNOWN, client_of
from mcp_gateway.oauth.verified import TokenRejected, Verified

pytestmark = pytest.mark.anyio

ISSUER = "https://idp.example.com"
AUDIENCE = "https://mcp.example.com/mcp"
FLOODER, OTHER = "192.0.2.66", "198.51.100.7"

Handler = Callable[[httpx2.Request], Awaitable[httpx2.Response]]


class Provider:
    """An introspection endpoint that holds every question until `answer` is set, and counts them."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.answer = anyio.Event()

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        token = dict(item.split("=", 1) for item in request.content.decode().split("&"))["token"]
        self.asked.append(token)
        await self.answer.wait()
        claims: dict[str, Any] = {"active": False}
        if token.startswith("good"):
            claims = {"active": True, "iss": ISSUER, "aud": AUDIENCE, "sub": token, "exp": time.time() + 300}
        return httpx2.Response(200, json=claims)


def introspector(handler: Handler, timeout: float = 30.0, **settings: Any) -> Introspector:
    config = IntrospectionSettings(
        endpoint=f"{ISSUER}/introspect", client_id="gateway", client_secret="secret", cache_seconds=0, **settings
    )
    checker = Introspector(config, ISSUER, [AUDIENCE], 60.0, timeout)
    checker._client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return checker


async def outcome(checker: Introspector, token: str, peer: str | None, into: dict[str, Verified | str]) -> None:
    try:
        into[token] = await checker.verify(token, peer=peer)
    except TokenRejected as exc:
        into[token] = exc.reason


async def test_a_client_past_its_share_is_refused_without_asking_the_provider_while_another_is_let_in() -> None:
    provider = Provider()
    checker = introspector(provider, max_concurrent=16)
    results: dict[str, Verified | str] = {}
    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(outcome, checker, f"junk-{i}", FLOODER, results)
        await wait_all_tasks_blocked()
        with pytest.raises(TokenRejected, match="from this address"):
            await checker.verify("junk-over-share", peer=FLOODER)
        tg.start_soon(outcome, checker, "good-agent", OTHER, results)
        await wait_all_tasks_blocked()
        held = dict(checker.shares.by_client), checker.shares.open
        provider.answer.set()

    assert held == ({FLOODER: 4, OTHER: 1}, 5)
    assert "junk-over-share" not in provider.asked and len(provider.asked) == 5
    assert isinstance(results["good-agent"], Verified)
    assert checker.shares.by_client == {} and checker.shares.open == 0


async def test_the_total_still_bounds_many_clients_each_within_its_share() -> None:
    provider = Provider()
    checker = introspector(provider, max_concurrent=4, max_concurrent_per_client=1)
    results: dict[str, Verified | str] = {}
    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(outcome, checker, f"junk-{i}", f"192.0.2.{i}", results)
        await wait_all_tasks_blocked()
        with pytest.raises(TokenRejected, match="too many tokens are being checked"):
            await checker.verify("good-late", peer=OTHER)
        provider.answer.set()

    assert len(provider.asked) == 4
    assert checker.shares.by_client == {} and checker.shares.open == 0


async def _server_error(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(500)


async def _unreachable(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("connection refused", request=request)


async def _never(request: httpx2.Request) -> httpx2.Response:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def _not_json(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, content=b"<html>")


@pytest.mark.parametrize("handler", [_server_error, _unreachable, _never, _not_json], ids=lambda h: h.__name__)
async def test_a_slot_comes_back_when_the_question_fails(handler: Handler) -> None:
    checker = introspector(handler, timeout=0.05, max_concurrent=2, max_concurrent_per_client=1)
    for token in ("first", "second"):  # the second would be refused, were the first's slot still held
        with pytest.raises(TokenRejected, match="identity provider could not"):
            await checker.verify(token, peer=FLOODER)
    assert checker.shares.by_client == {} and checker.shares.open == 0


async def test_a_slot_comes_back_when_the_caller_is_cancelled() -> None:
    checker = introspector(_never, max_concurrent=2, max_concurrent_per_client=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(outcome, checker, "abandoned", FLOODER, {})
        await wait_all_tasks_blocked()
        held = dict(checker.shares.by_client)
        tg.cancel_scope.cancel()

    assert held == {FLOODER: 1}
    assert checker.shares.by_client == {} and checker.shares.open == 0


async def test_the_table_holds_only_clients_with_a_question_open() -> None:
    provider = Provider()
    provider.answer.set()
    checker = introspector(provider)
    for i in range(500):
        with pytest.raises(TokenRejected, match="not active"):
            await checker.verify(f"junk-{i}", peer=f"10.{i // 256}.{i % 256}.1")
    assert checker.shares.by_client == {} and checker.shares.open == 0


def test_an_ipv6_client_is_its_64_and_an_ipv4_mapped_one_its_ipv4_address() -> None:
    assert client_of("2001:db8::1") == client_of("2001:db8::ffff:2") == "2001:db8::/64"
    assert client_of("2001:db8:0:1::1") != client_of("2001:db8::1")
    assert client_of("::ffff:192.0.2.66") == client_of("192.0.2.66") == "192.0.2.66"
    assert client_of(None) == client_of("") == UNKNOWN


def test_the_share_defaults_to_a_quarter_of_the_slots_and_may_not_exceed_them() -> None:
    def settings(**extra: Any) -> IntrospectionSettings:
        return IntrospectionSettings(endpoint=f"{ISSUER}/introspect", client_id="g", client_secret="s", **extra)

    assert settings().per_client == 4
    assert settings(max_concurrent=2).per_client == 1
    assert settings(max_concurrent=8, max_concurrent_per_client=8).per_client == 8
    with pytest.raises(ValidationError, match=r"max_concurrent_per_client \(17\) is more than max_concurrent \(16\)"):
        settings(max_concurrent_per_client=17)
