"""The key cache fails closed: a token whose key is not cached is refused when the identity
provider cannot be reached, within the fetch bound, and the next ones at once."""

from __future__ import annotations

import time

import anyio
import anyio.abc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mcp_gateway.oauth.config import OAuthSettings
from mcp_gateway.oauth.tokens import Verifier
from mcp_gateway.oauth.verified import TokenRejected

pytestmark = pytest.mark.anyio


async def test_a_provider_that_never_answers_gets_tokens_refused_within_the_fetch_bound() -> None:
    accepted: list[object] = []

    async def hold(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            accepted.append(stream)
            await anyio.sleep_forever()

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)  # accepts, never answers
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        settings = OAuthSettings(issuer=f"http://127.0.0.1:{port}", audience="http://127.0.0.1/mcp", fetch_timeout=0.5)
        verifier = Verifier(settings)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = int(time.time())
        claims = {"iss": settings.issuer, "aud": settings.audience, "sub": "a", "iat": now, "exp": now + 60}
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        reasons = []
        with anyio.fail_after(20):
            for _ in range(3):
                with pytest.raises(TokenRejected) as refused:
                    await verifier.verify(token, peer=None)
                reasons.append(refused.value.reason)
        tg.cancel_scope.cancel()
        await verifier.keys.aclose()

    assert len(accepted) == 1  # one fetch tried; the next tokens were refused without one
    assert all("not signed by a key of the issuer" in r for r in reasons)
