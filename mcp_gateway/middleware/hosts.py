"""DNS-rebinding protection as pure ASGI: a request whose Host (or Origin) is not this
gateway's is refused before any route sees it. Health probes are exempt: orchestrators
address them by pod IP."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..transport.security import HostCheck

EXEMPT = ("/healthz", "/readyz", "/metrics")
"""Health and metrics: `/metrics` needs a token, or a loopback Host it checks itself."""


class HostCheckMiddleware:
    def __init__(self, app: ASGIApp, check: HostCheck) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        problem = self.check.problem(host, origin)
        if problem is None:
            await self.app(scope, receive, send)
            return
        body = problem[1].encode()
        await send(
            {
                "type": "http.response.start",
                "status": problem[0],
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
