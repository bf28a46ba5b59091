"""A Hantera on loopback: the subset the registration service uses, over real HTTP.

Modelled on Hantera's public docs and customer-registration guide: one OAuth client whose
``grantTypes`` decide which grants it gets tokens for (by default the guide's three; refused ones,
and a wrong secret, answer RFC 6749 section 5.2 error bodies), client-credential tokens that
expire (401 when missing or expired), principals with unique emails (409) in either documented
shape (email and name at the top level as in the API reference, or under ``properties`` as in the
guide), listed in pages with the documented ``after``/``lastCursor`` cursor, and an etag on every
write (412 on an ``If-Match`` or body ``etag`` mismatch; answered as the reference's ``eTag`` by
default), password reset to a temporary password changed through ``/resources/me/password``
under a password-grant token, customer assets created with ``setDynamicFields`` and numbered
from their type's prefix (CUST100001, ...) with unique ``externalReference``, a graph that only
understands ``dynamic.<field> == '<text>'`` (anything else is 400: the injection tests rely on
it), and sendings recorded instead of delivered, once per ``Idempotency-Key`` (the adapter's
ASSUMPTION about Hantera: a repeated key is answered as the first and not sent again). Error
bodies may echo what was sent (an email, a wrong secret), as a real server's may: the adapter must
scrub them.

Fault switches (``Faults``): transport faults, drawn at random for each request the switches'
``path_prefix`` and ``method`` select, and scripted ones (a concurrent writer that changes a
principal between a client's read and its conditional write, 412, or resets its password under a
password change; a graph index that lags behind new assets; a few odd answers). Set them as a
whole, in Python or over HTTP::

    sim.faults = Faults(error_rate=0.1, rate_limit_rate=0.05, disconnect_rate=0.05,
                        lost_answer_rate=0.05, seed=1)
    sim.set_faults(error_rate=0.1)       # change some switches, keep the others
    sim.reset_faults()                   # all off
    POST /_sim/faults {"error_rate": 0.1, "seed": 1}    # as set_faults; GET shows them

The transport faults, as fractions of the selected requests (one draw per request, in this order,
so they add up; keep their sum at most 1): ``rate_limit_rate`` answers 429 with ``Retry-After:
retry_after_seconds``, ``error_rate`` 503, ``disconnect_rate`` closes the connection before the
request is handled (nothing done, no answer), ``lost_answer_rate`` handles it, then closes the
connection before the answer's body (done, but the client cannot tell: the case idempotency must
survive); ``latency_seconds`` delays each selected request; ``limit`` caps how many faults are
injected (``lost_answer_rate=1.0, limit=1``: exactly the next answer is lost). With ``seed`` set
the draws repeat exactly for the same sequence of requests (each ``Faults`` value restarts them);
without it they come from the simulator's ``seed``. The token endpoint is a request like any
other (``path_prefix="/resources"`` spares it). Every request is recorded (``requests``) with
the status its handler gave, and ``lost`` if its answer never left.

Inspection: the attributes below, or, from another process, the ``/_sim/`` endpoints
(``Inspection`` reads them). They are the test's, not part of Hantera's contract: they need no
token, are neither faulted nor recorded (so they do not change ``requests``), and no contract or
OpenAPI check covers them.

- ``GET /_sim/sendings|principals|assets|faults``: the attributes as JSON (``POST /_sim/faults``
  as above);
- ``GET /_sim/sendings/timed?after=N&wait=S``: the sendings from index ``N`` on, each with
  ``recordedAt`` (epoch seconds, when it was recorded); with ``wait`` and none there yet, waits
  up to ``S`` seconds (at most 60) for the next;
- ``GET /_sim/counts``: ``{"requests": <recorded requests>, "injected": <faults by kind>}``
  (``injected()``).

Run alone: ``python -m tests.simulators.hantera --port 8900`` (``--seed`` and ``--faults JSON``
set the random and the switches from the start; ``--help``). In tests: ``async with running() as
sim`` (a free port on 127.0.0.1; ``sim.base_url``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from activities.providers.hantera import CLIENT_GRANT_TYPES
from tests.simulators.loopback import (
    TransportFaults,
    fault_options,
    hang_up,
    json_or_text,
    recording,
    serve_forever,
    serving,
    standalone_parser,
)

FIRST_ASSET_NUMBER = 100001
_FILTER = re.compile(r"^dynamic\.([A-Za-z_][A-Za-z0-9_]*) == '([^'\\]*)'$")
"""The whole graph filter grammar understood here."""
_ASSET_FIELDS = frozenset({"assetId", "assetNumber", "typeKey", "externalReference", "dynamic"})
_UNRECORDED_BODIES = ("/oauth/token", "/resources/me/password")
"""Requests whose bodies carry secrets: recorded without them."""
GUIDE_GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
"""The grant types of the client in the guide's step 2."""
_KNOWN_GRANTS = frozenset({*GUIDE_GRANT_TYPES, "password"})
PAGE_DEFAULT, PAGE_MAX = 50, 100
"""The principal list's documented ``limit`` default and maximum."""
_PRINCIPAL_FIELDS = ("name", "email", "phone", "picture", "settings", "accessAttributes")
"""Top-level principal fields of the API reference's PUT body, stored when sent."""
ETAG_PLACES = ("eTag", "etag", "header")
"""Where a principal answer may carry its etag (``HanteraSimulator.etag_field``)."""


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "message": message}, status, headers=headers)


def _oauth_error(status: int, code: str, description: str) -> Response:
    """The token endpoint's error body, RFC 6749 section 5.2."""
    return JSONResponse({"error": code, "error_description": description}, status)


async def _json(request: Request) -> Any:
    """The JSON body, ``None`` if it is not JSON (handlers then answer 400)."""
    try:
        return await request.json()
    except ValueError:
        return None


def _bare(etag: str) -> str:
    """An etag without ``W/`` and quotes, for comparison."""
    return etag.removeprefix("W/").strip('"')


@dataclass
class Faults(TransportFaults):
    """Misbehaviour of the non-``/_sim`` endpoints: the transport faults, and Hantera's own."""

    empty_asset_paths: bool = False
    """Asset creation creates nothing and answers ``{"paths": []}``."""
    concurrent_principal_writes: int = 0
    """The next this many conditional principal PUTs (``If-Match`` or body ``etag``) lose a race:
    just before the etag check another writer changes the principal (a new etag, its property
    ``concurrentWrites`` counted up), so they answer 412. Counts down; ignores ``path_prefix``."""
    bare_principal_puts: bool = False
    """A principal PUT that succeeds answers 204 without a body (the guide shows no answer, so an
    adapter must not depend on one). Ignores ``path_prefix``."""
    concurrent_password_resets: int = 0
    """The next this many password changes lose a race against another reset: just before the
    check the principal gets a new temporary password, so ``currentPassword`` is wrong (400
    ``INVALID_PASSWORD``). Counts down; ignores ``path_prefix``."""
    echo_rejected_sendings: bool = False
    """Sendings are refused (422 ``MESSAGE_REJECTED``) with the plain-text body quoted in the
    error, as a content filter's answer may quote what it rejected. Ignores ``path_prefix``."""
    graph_lag_queries: int = 0
    """An asset created through the API stays out of graph results for the next this many graph
    queries: the graph is an index updated after the write. Neither the guide nor Hantera's
    public docs say whether it lags; the adapter allows for it (``_created_before``), this makes
    that, and the undo of an asset only its id finds, testable. Ignores ``path_prefix``."""


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    body: Any
    status: int = 0
    """The handler's answer (0: not answered yet, or never handled)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Request headers, lower-cased names, without ``authorization`` (a secret)."""
    lost: bool = False
    """The connection was closed instead of answering (``disconnect_rate``: not handled, status
    0; ``lost_answer_rate``: handled, the status its handler gave)."""


@dataclass
class IssuedToken:
    kind: str  # "client" or "principal"
    subject: str
    expires: float


@dataclass
class AssetType:
    prefix: str
    edge: str
    last_number: int = FIRST_ASSET_NUMBER - 1


@dataclass
class HanteraSimulator:
    """One simulated tenant with one OAuth client. State is public for inspection; ``app`` is
    the ASGI application (``running`` serves it)."""

    client_id: str = "registration-service"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    grant_types: tuple[str, ...] = GUIDE_GRANT_TYPES
    """The client's ``grantTypes``: the guide's by default, plus what a test's setup grants."""
    etag_field: str = "eTag"
    """Where principal answers carry the etag (one of ``ETAG_PLACES``): the API reference's
    ``eTag`` field, the guide's ``etag`` field (``principal.etag``), or only the HTTP ``ETag``
    header."""
    token_lifetime_seconds: float = 300.0
    seed: int | None = None
    base_url: str = ""
    faults: Faults = field(default_factory=Faults)
    principals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Public principal documents by id (what GET answers)."""
    passwords: dict[str, str] = field(default_factory=dict)
    """Current password by principal id (the temporary one after a reset)."""
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    registry: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, Any] = field(default_factory=dict)
    sendings: list[dict[str, Any]] = field(default_factory=list)
    """Sendings made, each once: a repeated ``Idempotency-Key`` is answered, not recorded."""
    sending_times: list[float] = field(default_factory=list)
    """When each of ``sendings`` was recorded (epoch seconds), by index."""
    requests: list[RecordedRequest] = field(default_factory=list)
    """Every non-``/_sim`` request with its answer's status (no secrets in bodies)."""
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    """Issued bearer tokens, client and principal ones."""
    asset_types: dict[str, AssetType] = field(
        default_factory=lambda: {"customer": AssetType("CUST", "customers")}
    )
    unindexed: dict[str, int] = field(default_factory=dict)
    """By asset id: how many more graph queries a lagging asset is hidden from
    (``graph_lag_queries``)."""
    _sending_waiters: list[asyncio.Future[None]] = field(
        default_factory=list, init=False, repr=False
    )
    """Readers of ``/_sim/sendings/timed`` waiting for the next sending."""

    def __post_init__(self) -> None:
        if self.etag_field not in ETAG_PLACES:
            raise ValueError(f"etag_field must be one of {ETAG_PLACES}")
        self._random = random.Random(self.seed)
        routes = [
            Route("/oauth/token", self._token, methods=["POST"]),
            Route("/resources/iam/principals", self._list_principals, methods=["GET"]),
            Route(
                "/resources/iam/principals/{id}",
                self._principal,
                methods=["GET", "PUT", "DELETE"],
            ),
            Route(
                "/resources/iam/principals/{id}/password/reset",
                self._reset_password,
                methods=["POST"],
            ),
            Route("/resources/me/password", self._change_password, methods=["POST"]),
            Route("/resources/graph", self._graph, methods=["POST"]),
            Route("/resources/actors/asset/{id}", self._asset_messages, methods=["POST"]),
            Route("/resources/sendings/email", self._send_email, methods=["POST"]),
            Route("/resources/registry/{key:path}", self._registry, methods=["POST"]),
            Route("/resources/iam/roles/{key}", self._role, methods=["PUT"]),
            Route("/_sim/sendings", self._inspect("sendings"), methods=["GET"]),
            Route("/_sim/sendings/timed", self._timed_sendings, methods=["GET"]),
            Route("/_sim/counts", self._counts, methods=["GET"]),
            Route("/_sim/principals", self._inspect("principals"), methods=["GET"]),
            Route("/_sim/assets", self._inspect("assets"), methods=["GET"]),
            Route("/_sim/faults", self._faults, methods=["GET", "POST"]),
        ]
        self.app: ASGIApp = self._middleware(Starlette(routes=routes))

    # Python API -------------------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault switches (``Faults`` field names); unknown names raise. A new
        ``Faults`` value: with a ``seed``, its draws start over."""
        self.faults = dataclasses.replace(self.faults, **changes)
        return self.faults

    def reset_faults(self) -> None:
        self.faults = Faults()

    def expire_tokens(self) -> None:
        """Every token issued so far is expired now (the next use answers 401)."""
        for token in self.tokens.values():
            token.expires = 0.0

    def add_asset(
        self, type_key: str, dynamic: dict[str, Any], external_reference: str | None = None
    ) -> dict[str, Any]:
        """An asset made outside the service (e.g. an imported customer)."""
        return self._create_asset(type_key, dynamic, external_reference, None)

    def add_principal(self, principal_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A principal made outside the service (staff, another flow); ``body`` as a PUT sends
        it, in either shape."""
        doc = self._principal_doc(principal_id, body, None)
        self.principals[principal_id] = doc
        return doc

    @property
    def graph_filters(self) -> list[str]:
        """Every graph filter received, in order."""
        return [
            query.get("filter", "")
            for r in self.requests
            if r.path == "/resources/graph" and isinstance(r.body, list)
            for query in r.body
            if isinstance(query, dict)
        ]

    def count(self, path: str, status: int | None = None) -> int:
        """Recorded requests to ``path`` (answered with ``status`` if given)."""
        return sum(1 for r in self.requests if r.path == path and status in (None, r.status))

    def injected(self) -> dict[str, int]:
        """The transport faults recorded so far, by kind: ``429``, ``503``, ``dropped
        connection`` (closed before handling) and ``answer lost`` (handled, then closed)."""
        kinds: dict[str, int] = {}
        for request in self.requests:
            if request.lost:
                kind = "answer lost" if request.status else "dropped connection"
            elif request.status in (429, 503):
                kind = str(request.status)
            else:
                continue
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    def env(self) -> dict[str, str]:
        """The ``REGISTRATION_HANTERA_*`` variables that point the service at this simulator."""
        return {
            "REGISTRATION_HANTERA_BASE_URL": self.base_url,
            "REGISTRATION_HANTERA_CLIENT_ID": self.client_id,
            "REGISTRATION_HANTERA_CLIENT_SECRET": self.client_secret,
        }

    # Transport: faults, recording, authentication ---------------------------------------------

    def _middleware(self, app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path", "")
            if scope["type"] != "http" or path.startswith("/_sim"):
                await app(scope, receive, send)
                return
            headers = {
                name.decode().lower(): value.decode(errors="replace")
                for name, value in scope["headers"]
                if name.lower() != b"authorization"
            }
            record = RecordedRequest(
                scope["method"], path, scope["query_string"].decode(), None, headers=headers
            )
            self.requests.append(record)

            def body(raw: bytes) -> None:
                if path not in _UNRECORDED_BODIES:
                    record.body = json_or_text(raw)

            recording_receive, recording_send = recording(receive, send, record, body)
            await self._faulty(scope, recording_receive, recording_send, app, record, send)

        return middleware

    async def _faulty(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        app: ASGIApp,
        record: RecordedRequest,
        raw_send: Send,
    ) -> None:
        """The request as the fault switches say: ``send`` records, ``raw_send`` does not."""
        faults = self.faults

        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            await self._authenticated(scope, receive, send, app)

        if not faults.selects(scope):
            await handle(scope, receive, send)
            return
        if faults.latency_seconds:
            await asyncio.sleep(faults.latency_seconds)
        fault = faults.draw(self._random)
        if fault == "429":
            retry_after = {"Retry-After": str(faults.retry_after_seconds)}
            await _error(429, "TOO_MANY_REQUESTS", "rate limited", retry_after)(
                scope, receive, send
            )
        elif fault == "503":
            await _error(503, "SERVICE_UNAVAILABLE", "simulated outage")(scope, receive, send)
        elif fault in ("disconnect", "lost"):
            # A disconnect reads (and records) the body, then hangs up without handling it.
            await hang_up(scope, receive, raw_send, record, handle if fault == "lost" else None)
        else:
            await handle(scope, receive, send)

    async def _authenticated(
        self, scope: Scope, receive: Receive, send: Send, app: ASGIApp
    ) -> None:
        """Bearer token check: client tokens for ``/resources``, principal ones for ``/me``."""
        path = scope["path"]
        if path.startswith("/resources/"):
            headers = dict(scope["headers"])
            scheme, _, value = headers.get(b"authorization", b"").decode().partition(" ")
            token = self.tokens.get(value) if scheme.lower() == "bearer" else None
            if token is None or time.monotonic() >= token.expires:
                denied = _error(401, "UNAUTHORIZED", "missing, unknown or expired token")
                await denied(scope, receive, send)
                return
            if (token.kind == "principal") != path.startswith("/resources/me/"):
                await _error(403, "FORBIDDEN", "not allowed")(scope, receive, send)
                return
            scope.setdefault("state", {})["subject"] = token.subject
        await app(scope, receive, send)

    def _issue(self, kind: str, subject: str) -> Response:
        token = secrets.token_urlsafe(24)
        lifetime = self.token_lifetime_seconds
        self.tokens[token] = IssuedToken(kind, subject, time.monotonic() + lifetime)
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": lifetime})

    async def _token(self, request: Request) -> Response:
        """RFC 6749 token endpoint: the client first, then whether it may use the grant."""
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        client_ok = secrets.compare_digest(client_id, self.client_id) and secrets.compare_digest(
            secret, self.client_secret
        )
        if not client_ok:
            # 400, not 401: the credentials came in the form, not an Authorization header (RFC
            # 6749 section 5.2). Echoes what was sent, as a careless server may: the adapter
            # must scrub it.
            description = f"unknown client {client_id!r} or wrong secret {secret!r}"
            return _oauth_error(400, "invalid_client", description)
        grant = form.get("grant_type", "")
        if grant not in _KNOWN_GRANTS:
            return _oauth_error(400, "unsupported_grant_type", f"grant {grant!r} is unknown")
        if grant not in self.grant_types:
            description = f"client {client_id!r} may not use the {grant} grant"
            return _oauth_error(400, "unauthorized_client", description)
        if grant == "client_credentials":
            return self._issue("client", self.client_id)
        if grant != "password":
            return _oauth_error(400, "unsupported_grant_type", f"{grant} is not simulated")
        principal = self._by_email(form.get("username", ""))
        password = self.passwords.get(principal["id"]) if principal else None
        if principal is None or password is None or password != form.get("password"):
            return _oauth_error(400, "invalid_grant", "wrong username or password")
        return self._issue("principal", principal["id"])

    # IAM --------------------------------------------------------------------------------------

    def _by_email(self, email: str) -> dict[str, Any] | None:
        return next(
            (p for p in self.principals.values() if _email_of(p).lower() == email.lower()), None
        )

    def _answer(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A stored principal as answered: its etag under ``etag_field`` (or in no field)."""
        answer = {k: v for k, v in doc.items() if k != "etag"}
        if self.etag_field != "header":
            answer[self.etag_field] = doc["etag"]
        return answer

    def _principal_response(self, doc: dict[str, Any]) -> Response:
        headers = {"ETag": f'"{doc["etag"]}"'} if self.etag_field == "header" else None
        return JSONResponse(self._answer(doc), headers=headers)

    async def _list_principals(self, request: Request) -> Response:
        """One page, ordered by id, of the principals whose email contains ``email``.

        The documented contract: ``limit`` (default 50, at most 100), ``after`` = the previous
        page's ``lastCursor`` (an id). The ``email`` filter's matching rule is not documented;
        a case-insensitive substring here, the loosest plausible one, so near-misses come back
        and an adapter must re-check hits and page past them.
        """
        query = request.query_params
        limit = query.get("limit", str(PAGE_DEFAULT))
        if not limit.isdigit() or not 1 <= int(limit) <= PAGE_MAX:
            return _error(400, "INVALID_LIMIT", f"limit must be 1 to {PAGE_MAX}")
        email, after = (query.get("email") or "").lower(), query.get("after") or ""
        found = sorted(
            (p for p in self.principals.values() if email in _email_of(p).lower()),
            key=lambda p: str(p["id"]),
        )
        page = [p for p in found if p["id"] > after][: int(limit)]
        return JSONResponse(
            {
                "principals": [self._answer(p) for p in page],
                "totalCount": len(found),
                "firstCursor": page[0]["id"] if page else None,
                "lastCursor": page[-1]["id"] if page else None,
            }
        )

    async def _principal(self, request: Request) -> Response:
        principal_id = request.path_params["id"]
        if request.method == "PUT":
            return await self._put_principal(request, principal_id)
        current = self.principals.get(principal_id)
        if current is None:
            return _error(404, "NOT_FOUND", f"principal {principal_id} not found")
        if request.method == "DELETE":
            del self.principals[principal_id]
            self.passwords.pop(principal_id, None)
            return JSONResponse({"id": principal_id})
        return self._principal_response(current)

    async def _put_principal(self, request: Request, principal_id: str) -> Response:
        """Create or replace, in either documented shape (the guide's step 4 and 5 bodies send
        only ``properties`` and ``roles``). The current principal is looked up only once the
        body is in, and nothing awaits between the etag check and the write: a writer that
        finished meanwhile is seen, never overwritten."""
        body = await _json(request)
        if not isinstance(body, dict):
            return _error(400, "INVALID_BODY", "a JSON object is required")
        if not isinstance(body.get("roles", []), list) or not isinstance(
            body.get("properties", {}), dict
        ):
            return _error(400, "INVALID_BODY", "roles must be a list, properties an object")
        email = _email_of(body)
        if not email:
            return _error(400, "INVALID_BODY", "an email (top level or in properties) is required")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email) or len(email) > 254:
            return _error(422, "INVALID_EMAIL", "email is not a valid address")
        current = self.principals.get(principal_id)
        expected = [_bare(e) for e in (request.headers.get("If-Match"), body.get("etag")) if e]
        if expected and current is not None and self.faults.concurrent_principal_writes > 0:
            self._concurrent_write(current)
        if expected and (current is None or any(e != current["etag"] for e in expected)):
            return _error(412, "PRECONDITION_FAILED", "etag does not match")
        owner = self._by_email(email)
        if owner is not None and owner["id"] != principal_id:
            # Echoes the address, as a real server may: the adapter must scrub it.
            return _error(409, "EMAIL_TAKEN", f"email {email} is already used by another principal")
        doc = self._principal_doc(principal_id, body, current)
        self.principals[principal_id] = doc
        if self.faults.bare_principal_puts:
            return Response(status_code=204)
        return self._principal_response(doc)

    @staticmethod
    def _principal_doc(
        principal_id: str, body: dict[str, Any], current: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The stored principal: the fields as sent (a PUT replaces), in the shape sent."""
        return {
            "id": principal_id,
            "type": "principal",
            **{key: body[key] for key in _PRINCIPAL_FIELDS if key in body},
            "roles": list(body.get("roles", [])),
            "acl": body.get("acl", {"entries": []}),
            "properties": dict(body.get("properties", {})),
            "createdAt": current["createdAt"] if current else time.time(),
            "etag": uuid.uuid4().hex[:16],
        }

    def _concurrent_write(self, current: dict[str, Any]) -> None:
        """Another writer wins the race for ``current``: a change and a new etag."""
        self.faults.concurrent_principal_writes -= 1  # in place: the draws go on
        properties = current["properties"]
        properties["concurrentWrites"] = int(properties.get("concurrentWrites", 0)) + 1
        current["etag"] = uuid.uuid4().hex[:16]

    async def _reset_password(self, request: Request) -> Response:
        principal_id = request.path_params["id"]
        if principal_id not in self.principals:
            return _error(404, "NOT_FOUND", f"principal {principal_id} not found")
        temporary = secrets.token_urlsafe(12)
        self.passwords[principal_id] = temporary
        return JSONResponse({"temporaryPassword": temporary})

    async def _change_password(self, request: Request) -> Response:
        principal_id = request.state.subject
        body = await _json(request)
        if not isinstance(body, dict):
            return _error(400, "INVALID_BODY", "a JSON object is required")
        if self.faults.concurrent_password_resets > 0:
            self.faults.concurrent_password_resets -= 1
            self.passwords[principal_id] = secrets.token_urlsafe(12)
        if body.get("currentPassword") != self.passwords.get(principal_id):
            return _error(400, "INVALID_PASSWORD", "current password is wrong")
        new = body.get("newPassword")
        if not isinstance(new, str) or len(new) < 8:
            return _error(422, "PASSWORD_POLICY", "password must be at least 8 characters")
        self.passwords[principal_id] = new
        return JSONResponse({"changed": True})

    async def _role(self, request: Request) -> Response:
        self.roles[request.path_params["key"]] = await _json(request)
        return JSONResponse({"key": request.path_params["key"]})

    async def _registry(self, request: Request) -> Response:
        key, value = request.path_params["key"], await _json(request)
        self.registry[key] = value
        type_key = key.removeprefix("actors/asset/types/")
        if type_key != key and isinstance(value, dict):
            # The guide's pairing: graphSetName "customer" is queried as edge "customers".
            known = self.asset_types.get(type_key)
            self.asset_types[type_key] = AssetType(
                str(value.get("defaultNumberPrefix", "")),
                f"{value.get('graphSetName', type_key)}s",
                known.last_number if known else FIRST_ASSET_NUMBER - 1,
            )
        return JSONResponse({"key": key})

    # Assets and graph -------------------------------------------------------------------------

    def _create_asset(
        self,
        type_key: str,
        dynamic: dict[str, Any],
        external_reference: str | None,
        number: str | None,
        lag: int = 0,
    ) -> dict[str, Any]:
        asset_type = self.asset_types[type_key]
        if number is None:
            asset_type.last_number += 1
            number = f"{asset_type.prefix}{asset_type.last_number}"
        asset_id = str(uuid.uuid4())
        if lag:
            self.unindexed[asset_id] = lag
        asset: dict[str, Any] = {
            "assetId": asset_id,
            "assetNumber": number,
            "typeKey": type_key,
            "externalReference": external_reference,
            "dynamic": dict(dynamic),
        }
        self.assets[asset_id] = asset
        return asset

    async def _asset_messages(self, request: Request) -> Response:
        messages = await _json(request)
        if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
            return _error(400, "INVALID_MESSAGE_BODY", "a non-empty list of messages is required")
        asset_id = request.path_params["id"]
        if asset_id == "new":
            return self._create_message(messages[0])
        if asset_id not in self.assets:
            return _error(404, "NOT_FOUND", f"asset {asset_id} not found")
        if [m.get("type") for m in messages] != ["delete"]:
            return _error(400, "INVALID_MESSAGE_BODY", "only the delete message is simulated")
        del self.assets[asset_id]
        self.unindexed.pop(asset_id, None)
        return JSONResponse({"data": {"delete": "OK"}})

    def _create_message(self, message: dict[str, Any]) -> Response:
        body = message.get("body")
        if message.get("type") != "create" or not isinstance(body, dict):
            return _error(400, "INVALID_MESSAGE_BODY", "the first message must be create")
        type_key = body.get("typeKey")
        if type_key not in self.asset_types:
            return _error(400, "INVALID_MESSAGE_BODY", f"unknown asset type {type_key!r}")
        dynamic: dict[str, Any] = {}
        for command in body.get("commands", []):
            # The asset command reference's form; the guide's ``setDynamic`` with
            # ``body.fields`` is not in it.
            fields = command.get("fields")
            if command.get("type") != "setDynamicFields" or not isinstance(fields, dict):
                return _error(
                    400, "INVALID_COMMAND", "only setDynamicFields with fields is simulated"
                )
            dynamic.update(fields)
        reference, number = body.get("externalReference"), body.get("assetNumber")
        for asset in self.assets.values():
            if (reference and asset["externalReference"] == reference) or (
                number and (asset["typeKey"], asset["assetNumber"]) == (type_key, number)
            ):
                return _error(409, "ALREADY_EXISTS", "externalReference or assetNumber is taken")
        if self.faults.empty_asset_paths:
            return JSONResponse({"paths": [], "data": {}})
        asset = self._create_asset(
            type_key, dynamic, reference, number, self.faults.graph_lag_queries
        )
        base = "resources/actors/asset"
        paths = [f"{base}/{asset['assetId']}", f"{base}/{type_key}/{asset['assetNumber']}"]
        if reference:
            paths.append(f"{base}/{type_key}/{reference}")
        return JSONResponse({"paths": paths, "data": {"create": "OK"}})

    async def _graph(self, request: Request) -> Response:
        queries = await _json(request)
        if not isinstance(queries, list):
            return _error(400, "INVALID_QUERY", "a list of queries is required")
        edges = {t.edge: key for key, t in self.asset_types.items()}
        results = []
        for query in queries:
            type_key = edges.get(str(query.get("edge"))) if isinstance(query, dict) else None
            if type_key is None:
                return _error(400, "INVALID_QUERY", "unknown edge")
            match = _FILTER.fullmatch(query.get("filter", ""))
            if match is None:
                return _error(400, "INVALID_FILTER", "unsupported filter expression")
            fields = (query.get("node") or {}).get("fields") or []
            if not set(fields) <= _ASSET_FIELDS:
                return _error(400, "INVALID_QUERY", "unknown node field")
            name, value = match.groups()
            nodes = [
                {f: asset[f] for f in fields}
                for asset in self.assets.values()
                if asset["typeKey"] == type_key
                and asset["dynamic"].get(name) == value
                and asset["assetId"] not in self.unindexed
            ]
            results.append({"nodes": nodes})
            self._index_one_query_later()
        return JSONResponse(results)

    def _index_one_query_later(self) -> None:
        """One graph query has passed: lagging assets come one query closer to being found."""
        for asset_id, remaining in list(self.unindexed.items()):
            if remaining > 1:
                self.unindexed[asset_id] = remaining - 1
            else:
                del self.unindexed[asset_id]

    # Sendings ---------------------------------------------------------------------------------

    async def _send_email(self, request: Request) -> Response:
        body = await _json(request)
        content = body.get("body") if isinstance(body, dict) else None
        if not isinstance(content, dict) or not isinstance(body.get("category"), str):
            return _error(400, "INVALID_BODY", "to, subject, body and category are required")
        if not isinstance(body.get("to"), str) or "@" not in body["to"]:
            return _error(422, "INVALID_RECIPIENT", "to is not an address")
        if body["category"].startswith("system:"):
            return _error(422, "RESERVED_CATEGORY", "system: categories are reserved")
        if self.faults.echo_rejected_sendings:
            return _error(422, "MESSAGE_REJECTED", f"content refused: {content.get('plainText')}")
        key = request.headers.get("Idempotency-Key")
        earlier = next((s for s in self.sendings if key and s["idempotency_key"] == key), None)
        if earlier is not None:
            return JSONResponse({"id": earlier["id"]})
        sending = {
            "id": str(uuid.uuid4()),
            "to": body["to"],
            "subject": body.get("subject"),
            "html": content.get("html"),
            "plainText": content.get("plainText"),
            "category": body["category"],
            "dynamic": body.get("dynamic") or {},
            "idempotency_key": key,
        }
        self.sendings.append(sending)
        self.sending_times.append(time.time())
        for waiter in self._sending_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._sending_waiters.clear()
        return JSONResponse({"id": sending["id"]})

    # Inspection endpoints ---------------------------------------------------------------------

    def _inspect(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            value = getattr(self, name)
            return JSONResponse(list(value.values()) if isinstance(value, dict) else value)

        return endpoint

    async def _timed_sendings(self, request: Request) -> Response:
        try:
            after = max(0, int(request.query_params.get("after") or 0))
            wait = min(max(0.0, float(request.query_params.get("wait") or 0)), 60.0)
        except ValueError:
            return _error(400, "INVALID_QUERY", "after is an index, wait seconds")
        if wait and len(self.sendings) <= after:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._sending_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, wait)
            except TimeoutError:
                pass
            finally:
                if waiter in self._sending_waiters:
                    self._sending_waiters.remove(waiter)
        timed = zip(self.sendings[after:], self.sending_times[after:], strict=True)
        return JSONResponse([{**sending, "recordedAt": at} for sending, at in timed])

    async def _counts(self, request: Request) -> Response:
        return JSONResponse({"requests": len(self.requests), "injected": self.injected()})

    async def _faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.set_faults(**(await _json(request) or {}))
            except TypeError as exc:
                return _error(400, "INVALID_FAULTS", str(exc))
        return JSONResponse(self.faults.settings())


def _email_of(doc: dict[str, Any]) -> str:
    """A principal's email: top level (API reference) or under ``properties`` (the guide)."""
    email = doc.get("email") or (doc.get("properties") or {}).get("email")
    return email if isinstance(email, str) else ""


class Inspection:
    """The ``/_sim/`` endpoints of a simulator served by another process (``main``): what a test
    reads there instead of the attributes. ``aclose`` when done."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=120.0)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _get(self, path: str, **params: Any) -> Any:
        answer = await self.http.get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    async def sendings(self, after: int = 0, wait: float = 0.0) -> list[dict[str, Any]]:
        """The sendings from index ``after`` on, each with ``recordedAt``; with ``wait``, up to
        that many seconds for one if there is none yet."""
        found: list[dict[str, Any]] = await self._get(
            "/_sim/sendings/timed", after=after, wait=wait
        )
        return found

    async def principals(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._get("/_sim/principals")
        return found

    async def assets(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._get("/_sim/assets")
        return found

    async def counts(self) -> dict[str, Any]:
        """``{"requests": <recorded requests>, "injected": <faults by kind>}``."""
        found: dict[str, Any] = await self._get("/_sim/counts")
        return found


def running(
    simulator: HanteraSimulator | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AbstractAsyncContextManager[HanteraSimulator]:
    """Serve ``simulator`` (a new one by default) until the block ends; port 0 picks a free one."""
    sim = simulator or HanteraSimulator()
    return serving(sim, sim.app, host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    parser = fault_options(standalone_parser("Hantera simulator for local runs and tests", 8900))
    parser.add_argument("--client-id", default="registration-service")
    parser.add_argument("--client-secret", default="dev-secret")
    parser.add_argument("--token-lifetime", type=float, default=300.0, help="seconds")
    parser.add_argument(
        "--grant-types",
        default=",".join(CLIENT_GRANT_TYPES),
        help="the client's grant types, comma-separated (default: what the service's setup asks)",
    )
    args = parser.parse_args(argv)
    sim = HanteraSimulator(
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_lifetime_seconds=args.token_lifetime,
        grant_types=tuple(args.grant_types.split(",")),
        seed=args.seed,
    )
    try:
        sim.set_faults(**args.faults)
    except TypeError as err:
        parser.error(f"--faults: {err}")
    serve_forever("Hantera simulator", running(sim, host=args.host, port=args.port))


if __name__ == "__main__":
    main()
