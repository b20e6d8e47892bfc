"""Bearer-token check for every request when PROTOSCOPE_TOKEN is set.

A plain ASGI middleware (not BaseHTTPMiddleware) so it never buffers a streaming response.
The token may come as `Authorization: Bearer <token>` or, for clients that cannot set
headers (the browser's EventSource, an <img> tag), as `?token=<token>`.
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

MESSAGE = (
    "missing or wrong token: send 'Authorization: Bearer <token>' (or ?token=<token> where "
    "headers cannot be set, e.g. EventSource)"
)


class TokenAuth:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    def _matches(self, candidate: str | bytes | None) -> bool:
        if candidate is None:
            return False
        raw = candidate.encode() if isinstance(candidate, str) else candidate
        return hmac.compare_digest(raw, self._token)  # constant time: no timing oracle

    def authorised(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer" and self._matches(credentials.strip()):
                    return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return any(self._matches(t) for t in query.get("token", []))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.authorised(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": MESSAGE}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="protoscope"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
