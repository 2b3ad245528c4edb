"""A stand-in for Microsoft's Bot Framework token keys: the OpenID metadata document and its signing keys.

Teams signs every activity it posts to a bot with an RS256 JWT; the bot checks it against the keys published at
``https://login.botframework.com/v1/.well-known/openidconfiguration`` (→ ``jwks_uri``). This fake publishes a key
pair of its own, so a test can mint tokens the bot accepts (:meth:`FakeOpenIdProvider.token`) and forge ones it
must refuse (:func:`forged_token`, signed by a key the provider never published).

It serves from a thread of its own, not the test's event loop: a bot that fetched keys with a blocking call on
its loop (botbuilder's own way) still gets an answer instead of deadlocking an in-process test. ``mode`` says how
it answers: ``"ok"``, ``"error"`` (503 for everything) or ``"hang"`` (accepts, reads the request, never answers).
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://api.botframework.com"
Mode = Literal["ok", "error", "hang"]


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str) -> str:
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def channel_claims(app_id: str, service_url: str, *, issuer: str = ISSUER, lifetime: float = 3600) -> dict[str, Any]:
    """The claims of a token the Bot Framework channel service sends with an activity (token version 1)."""
    now = int(time.time())  # PyJWT checks exp/nbf against the real clock, so tokens are minted on it too
    return {"iss": issuer, "aud": app_id, "serviceurl": service_url, "nbf": now - 60, "exp": now + int(lifetime)}


@functools.cache
def attacker_key() -> rsa.RSAPrivateKey:
    """One key for every forged token (making a 2048-bit key takes tens of milliseconds)."""
    return new_key()


def forged_token(app_id: str, service_url: str, *, kid: str | None = None) -> str:
    """A well-formed channel token signed by a key of the attacker's own (``kid`` may name a real key)."""
    return sign(channel_claims(app_id, service_url), attacker_key(), kid or f"forged-{uuid.uuid4().hex[:8]}")


class FakeOpenIdProvider:
    """Serves ``/v1/.well-known/openidconfiguration`` and ``/v1/keys`` on 127.0.0.1; counts the requests."""

    def __init__(self, mode: Mode = "ok", *, endorsements: tuple[str, ...] = ("msteams",)) -> None:
        self.mode: Mode = mode
        self.key = new_key()
        self.kid = f"test-key-{uuid.uuid4().hex[:8]}"
        self.endorsements = list(endorsements)
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openid", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/v1/.well-known/openidconfiguration"

    def token(self, app_id: str, service_url: str, **claims: Any) -> str:
        """A token the bot must accept: signed by the published key, for ``app_id`` and ``service_url``."""
        return sign({**channel_claims(app_id, service_url), **claims}, self.key, self.kid)

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def jwks(self) -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "endorsements": self.endorsements}]}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with provider._lock:
                    provider.requests.append(self.path)
                if provider.mode == "hang":
                    provider._release.wait()
                    return
                if provider.mode == "error":
                    self._answer(503, {"error": "temporarily unavailable"})
                elif self.path.endswith("/openidconfiguration"):
                    self._answer(200, {"issuer": ISSUER, "jwks_uri": f"{provider.base_url}/v1/keys",
                                       "id_token_signing_alg_values_supported": ["RS256"]})
                elif self.path.endswith("/keys"):
                    self._answer(200, provider.jwks())
                else:
                    self._answer(404, {"error": "not found"})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def start(self) -> FakeOpenIdProvider:
        self._thread.start()
        return self

    def close(self) -> None:
        self._release.set()  # let hanging requests go so the server can shut down
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOpenIdProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
