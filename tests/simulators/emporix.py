"""An Emporix tenant on loopback: the customer service subset the registration uses, over HTTP.

Modelled on Emporix's customer-managed tutorial and the three contracts in
``../shared/specs/emporix`` (``tests/test_emporix_contract.py`` validates what it answers):

* Tokens: the storefront's anonymous token (``GET /customerlogin/auth/anonymous/login``) and the
  service client's token (``POST /oauth/token``, client credentials, form-encoded; granted the
  requested scopes the client has). Both expire (``*_lifetime_seconds``); a missing or unknown
  token answers the gateway's 401 ``oauth.v2.InvalidAccessToken``, an expired one
  ``keymanagement.service.access_token_expired``.
* Scopes per endpoint: the tenant-managed endpoints need ``customer.customer_read`` (reads) or
  ``customer.customer_manage`` (PATCH, DELETE) on a service token; sign-up and login need an
  anonymous token. Otherwise 403 with the documented body.
* Sign-up creates the record inactive, with an account whose email is unique per tenant (409
  ``conflict_resource``, the documented body); login refuses an inactive account (401).
* PATCH applies the fields and bumps ``metadata.version``; a stale ``metadata.version`` answers 409
  (the adapter's ASSUMPTION, which the contracts do not list). DELETE answers 202 and removes the
  record and its accounts; an unknown number answers the documented 404.
* ``q``: ``field:value`` or ``field:"value"`` for ``contactEmail`` (case-insensitive) and any
  dotted field (``mixins.registration.principalId``); anything else is 400.

Fault switches (``Faults``) as Hantera's simulator's: ``error_rate`` (503), ``rate_limit_rate``
(429 with ``Retry-After``), ``disconnect_rate`` (closed before handling), ``lost_answer_rate``
(handled, then closed before the answer), ``limit``, ``path_prefix``, ``method``; plus
``concurrent_patches`` (the next PATCHes find the version moved). Every request is recorded
(``requests``; bodies without passwords and secrets).

Run alone: ``python -m tests.simulators.emporix --port 8901``. In tests: ``async with running()
as sim``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
import re
import secrets
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from activities.providers.emporix import MANAGE_SCOPE, READ_SCOPE
from tests.simulators.loopback import (
    TransportFaults,
    hang_up,
    json_or_text,
    recording,
    serve_forever,
    serving,
    standalone_parser,
)

FIRST_NUMBER = 13869000
_Q = re.compile(r'^([A-Za-z][A-Za-z0-9_.]*):(?:"([^"\\]*)"|([^\s"]+))$')
_SECRET_BODIES = ("/oauth/token",)
"""Requests whose whole body is a secret: recorded without it."""


def _error(status: int, kind: str, message: str, **extra: Any) -> Response:
    return JSONResponse({"status": status, "type": kind, "message": message, **extra}, status)


def _fault(faultstring: str, errorcode: str) -> Response:
    return JSONResponse(
        {"fault": {"faultstring": faultstring, "detail": {"errorcode": errorcode}}}, 401
    )


FORBIDDEN = {"type": "Forbidden", "status": 403, "message": "User not authorized."}
"""The documented 403 body."""


def _not_found(number: str) -> Response:
    """The documented 404 of a customer."""
    return JSONResponse(
        {
            "status": 404,
            "type": "application/json",
            "message": "Customer not Found",
            "details": [{"message": f"Couldn't find a customer with customerNumber '{number}'"}],
        },
        404,
    )


@dataclass
class Faults(TransportFaults):
    concurrent_patches: int = 0
    """The next this many PATCHes lose a race: another writer bumps the version first (409)."""


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    body: Any
    status: int = 0
    lost: bool = False
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    """Request headers, lower-cased names; ``authorization`` as ``Bearer ***``."""
    raw_body: bytes = b""
    """The body as sent, passwords and the client secret replaced by ``***`` (for the contract
    test)."""
    response_body: bytes = b""
    response_type: str = ""


@dataclass
class IssuedToken:
    kind: str  # "anonymous" or "service"
    scopes: frozenset[str]
    expires: float


@dataclass
class EmporixSimulator:
    tenant: str = "acme"
    storefront_client_id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    client_id: str = "registration-service"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    client_scopes: frozenset[str] = frozenset({READ_SCOPE, MANAGE_SCOPE})
    anonymous_lifetime_seconds: int = 3599
    service_lifetime_seconds: int = 14399
    min_password_length: int = 8
    seed: int | None = None
    base_url: str = ""
    faults: Faults = field(default_factory=Faults)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Records by customer number (as GET answers them, with accounts and mixins)."""
    passwords: dict[str, str] = field(default_factory=dict)
    """By account email (lower-cased)."""
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._numbers = itertools.count(FIRST_NUMBER)
        t = "/customer/{tenant}"
        routes = [
            Route("/oauth/token", self._token, methods=["POST"]),
            Route("/customerlogin/auth/anonymous/login", self._anonymous, methods=["GET"]),
            Route(f"{t}/signup", self._signup, methods=["POST"]),
            Route(f"{t}/login", self._login, methods=["POST"]),
            Route(f"{t}/customers", self._list, methods=["GET"]),
            Route(f"{t}/customers/{{number}}", self._customer, methods=["GET", "PATCH", "DELETE"]),
        ]
        self.app: ASGIApp = self._middleware(Starlette(routes=routes))

    # Python API -------------------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> Faults:
        self.faults = dataclasses.replace(self.faults, **changes)
        return self.faults

    def reset_faults(self) -> None:
        self.faults = Faults()

    def expire_tokens(self) -> None:
        for token in self.tokens.values():
            token.expires = 0.0

    def add_customer(
        self,
        contact_email: str,
        *,
        first_name: str = "Imported",
        last_name: str = "Customer",
        active: bool = True,
        account_email: str | None = None,
        password: str | None = None,
        mixins: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A record made outside the registration (an employee, an import), with an account
        (``account_email``, by default the contact email) unless ``account_email=""``."""
        account = contact_email if account_email is None else account_email
        doc = self._new_record(contact_email, account or None, first_name, last_name, mixins)
        doc["active"] = active
        if account and password:
            self.passwords[account.lower()] = password
        return doc

    def by_email(self, email: str) -> list[dict[str, Any]]:
        email = email.lower()
        return [
            doc
            for doc in self.customers.values()
            if str(doc.get("contactEmail", "")).lower() == email
            or any(a["id"].lower() == email for a in doc["accounts"])
        ]

    def _account(self, email: str) -> dict[str, Any] | None:
        """The record whose account (login) is ``email``: unique per tenant."""
        email = email.lower()
        return next(
            (
                d
                for d in self.customers.values()
                if any(a["id"].lower() == email for a in d["accounts"])
            ),
            None,
        )

    def env(self) -> dict[str, str]:
        """The ``REGISTRATION_EMPORIX_*`` variables that point the service at this simulator."""
        return {
            "REGISTRATION_EMPORIX_BASE_URL": self.base_url,
            "REGISTRATION_EMPORIX_TENANT": self.tenant,
            "REGISTRATION_EMPORIX_STOREFRONT_CLIENT_ID": self.storefront_client_id,
            "REGISTRATION_EMPORIX_CLIENT_ID": self.client_id,
            "REGISTRATION_EMPORIX_CLIENT_SECRET": self.client_secret,
        }

    def count(self, method: str, path: str, status: int | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if r.method == method and r.path == path and status in (None, r.status)
        )

    def _new_record(
        self,
        contact_email: str,
        account: str | None,
        first_name: str,
        last_name: str,
        mixins: dict[str, Any] | None,
    ) -> dict[str, Any]:
        number = str(next(self._numbers))
        doc: dict[str, Any] = {
            "id": number,
            "customerNumber": number,
            "firstName": first_name,
            "lastName": last_name,
            "contactEmail": contact_email,
            "preferredLanguage": "en_US",
            "preferredCurrency": "EUR",
            "preferredSite": "main",
            "active": False,
            "onHold": False,
            "businessModel": "B2C",
            "accounts": [{"id": account}] if account else [],
            "mixins": mixins or {},
            "metadata": {"mixins": {}, "version": 1},
            "metadataCreatedAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        self.customers[number] = doc
        return doc

    # Transport --------------------------------------------------------------------------------

    def _middleware(self, app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            path = scope["path"]
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            record = RecordedRequest(
                scope["method"],
                path,
                scope["query_string"].decode(),
                None,
                content_type=headers.get("content-type", ""),
                headers={
                    k: ("Bearer ***" if k == "authorization" else v) for k, v in headers.items()
                },
            )
            self.requests.append(record)

            def body(raw: bytes) -> None:
                if path in _SECRET_BODIES:
                    form = parse_qs(raw.decode(errors="replace"))
                    form = {k: ["***"] if k == "client_secret" else v for k, v in form.items()}
                    record.raw_body = urlencode(form, doseq=True).encode()
                    return
                doc = json_or_text(raw)
                if isinstance(doc, dict) and "password" in doc:
                    doc = {**doc, "password": "***"}
                record.body = doc
                record.raw_body = (
                    raw if doc is None or not isinstance(doc, dict) else json.dumps(doc).encode()
                )

            def answer(message: Message) -> None:
                if message["type"] == "http.response.start":
                    for k, v in message.get("headers", []):
                        if k.lower() == b"content-type":
                            record.response_type = v.decode()
                elif message["type"] == "http.response.body":
                    record.response_body += message.get("body", b"")

            recording_receive, recording_send = recording(receive, send, record, body, answer)

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
        faults = self.faults
        if not faults.selects(scope):
            await app(scope, receive, send)
            return
        if faults.latency_seconds:
            await asyncio.sleep(faults.latency_seconds)
        fault = faults.draw(self._random)
        if fault == "429":
            answer = _error(429, "too_many_requests", "rate limited")
            answer.headers["Retry-After"] = str(faults.retry_after_seconds)
            await answer(scope, receive, send)
        elif fault == "503":
            await _error(503, "service_unavailable", "simulated outage")(scope, receive, send)
        elif fault in ("disconnect", "lost"):
            await hang_up(scope, receive, raw_send, record, app if fault == "lost" else None)
        else:
            await app(scope, receive, send)

    def _bearer(self, request: Request, kind: str, scope: str | None) -> Response | None:
        """``None`` if the request's token is a live ``kind`` token with ``scope``; else the
        documented 401 or 403."""
        header = request.headers.get("authorization", "")
        token = self.tokens.get(header.removeprefix("Bearer ").strip())
        if token is None:
            return _fault("Invalid access token", "oauth.v2.InvalidAccessToken")
        if token.expires <= time.monotonic():
            return _fault("Access Token expired", "keymanagement.service.access_token_expired")
        if token.kind != kind or (scope is not None and scope not in token.scopes):
            return JSONResponse(FORBIDDEN, 403)
        return None

    def _tenant(self, request: Request) -> Response | None:
        if request.path_params.get("tenant") != self.tenant:
            return _error(
                400, "bad_request", "The tenant information provided with the request is not valid."
            )
        return None

    # Endpoints --------------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode())
        one = {k: v[0] for k, v in form.items() if v}
        if one.get("client_id") != self.client_id or one.get("client_secret") != self.client_secret:
            return _fault("Invalid client identifier", "oauth.v2.InvalidClientIdentifier")
        if one.get("grant_type") != "client_credentials":
            return _error(400, "bad_request", "Grant type must be client_credentials.")
        asked = set(one.get("scope", "").split())
        tenant_scopes = {s for s in asked if s.startswith("tenant=")}
        if tenant_scopes - {f"tenant={self.tenant}"}:
            return _error(
                400, "bad_request", "The tenant information provided with the request is not valid."
            )
        granted = (
            frozenset(asked & self.client_scopes) if asked - tenant_scopes else self.client_scopes
        )
        value = secrets.token_urlsafe(20)
        self.tokens[value] = IssuedToken(
            "service", granted, time.monotonic() + self.service_lifetime_seconds
        )
        return JSONResponse(
            {
                "refresh_token_expires_in": 0,
                "refresh_token": "",
                "session_idle_time": 120,
                "token_type": "Bearer",
                "access_token": value,
                "expires_in": self.service_lifetime_seconds,
                "scope": " ".join([f"tenant={self.tenant}", *sorted(granted)]),
            }
        )

    async def _anonymous(self, request: Request) -> Response:
        params = request.query_params
        if params.get("client_id") != self.storefront_client_id:
            return _fault("Invalid ApiKey", "oauth.v2.InvalidApiKey")
        if params.get("tenant") != self.tenant:
            return _error(
                400, "bad_request", "The tenant information provided with the request is not valid."
            )
        value = secrets.token_urlsafe(20)
        self.tokens[value] = IssuedToken(
            "anonymous", frozenset(), time.monotonic() + self.anonymous_lifetime_seconds
        )
        return JSONResponse(
            {
                "token_type": "Bearer",
                "access_token": value,
                "expires_in": self.anonymous_lifetime_seconds,
                "refresh_token": secrets.token_urlsafe(20),
                "refresh_token_expires_in": 86399,
                "sessionId": secrets.token_hex(16),
                "scope": f"tenant={self.tenant}",
            }
        )

    async def _signup(self, request: Request) -> Response:
        refused = self._tenant(request) or self._bearer(request, "anonymous", None)
        if refused:
            return refused
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not body.get("email") or not body.get("password"):
            return _error(
                400,
                "validation_failure",
                "Invalid request.",
                details=[
                    {
                        "field": "email",
                        "type": "missing_value",
                        "message": "email and password are required",
                    }
                ],
            )
        email, password = str(body["email"]), str(body["password"])
        details = body.get("customerDetails") or {}
        contact = details.get("contactEmail") or email
        if contact.lower() != email.lower():
            return _error(400, "validation_failure", "contactEmail must equal email.")
        if len(password) < self.min_password_length:
            return _error(
                400,
                "validation_failure",
                "Invalid password.",
                details=[
                    {
                        "field": "password",
                        "type": "invalid_value",
                        "message": f"at least {self.min_password_length} characters",
                    }
                ],
            )
        if self._account(email) is not None:
            return _error(
                409, "conflict_resource", f"Duplicate account '{email}' for tenant '{self.tenant}'."
            )
        doc = self._new_record(
            contact,
            email,
            details.get("firstName", ""),
            details.get("lastName", ""),
            details.get("mixins"),
        )
        for key in ("contactPhone", "preferredLanguage", "title", "company"):
            if details.get(key):
                doc[key] = details[key]
        schemas = (details.get("metadata") or {}).get("mixins")
        if isinstance(schemas, dict):
            doc["metadata"]["mixins"] = schemas
        self.passwords[email.lower()] = password
        return JSONResponse({"id": doc["id"]}, 201)

    async def _login(self, request: Request) -> Response:
        refused = self._tenant(request) or self._bearer(request, "anonymous", None)
        if refused:
            return refused
        body = await request.json()
        email, password = str(body.get("email", "")).lower(), body.get("password")
        doc = self._account(email)
        if doc is None or self.passwords.get(email) != password:
            return _error(401, "unauthorized", "Invalid credentials.")
        if not doc["active"]:
            return _error(401, "unauthorized", "Customer account is not active.")
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(20),
                "saas_token": secrets.token_urlsafe(40),
                "expires_in": 2591999,
                "refresh_token": secrets.token_urlsafe(20),
                "refresh_token_expires_in": 86399,
                "token_type": "Bearer",
                "session_id": secrets.token_hex(16),
                "initialPassword": "false",
            }
        )

    def _view(self, doc: dict[str, Any], expand: str) -> dict[str, Any]:
        view = {k: v for k, v in doc.items() if k not in ("accounts", "mixins")}
        if "accounts" in expand:
            view["accounts"] = doc["accounts"]
        if "mixin" in expand:
            view["mixins"] = doc["mixins"]
        return view

    async def _list(self, request: Request) -> Response:
        refused = self._tenant(request) or self._bearer(request, "service", READ_SCOPE)
        if refused:
            return refused
        q = request.query_params.get("q", "")
        docs = list(self.customers.values())
        if q:
            match = _Q.fullmatch(q)
            if not match:
                return _error(400, "bad_request", "Invalid query.")
            name, value = (
                match.group(1),
                match.group(2) if match.group(2) is not None else match.group(3),
            )
            docs = [d for d in docs if _matches(d, name, value)]
        expand = request.query_params.get("expand", "")
        answer = [self._view(d, expand) for d in docs]
        return JSONResponse(answer, headers={"Count": str(len(answer))})

    async def _customer(self, request: Request) -> Response:
        method = request.method
        scope = READ_SCOPE if method == "GET" else MANAGE_SCOPE
        refused = self._tenant(request) or self._bearer(request, "service", scope)
        if refused:
            return refused
        number = request.path_params["number"]
        doc = self.customers.get(number)
        if doc is None:
            return _not_found(number)
        if method == "GET":
            return JSONResponse(self._view(doc, request.query_params.get("expand", "")))
        if method == "DELETE":
            del self.customers[number]
            for account in doc["accounts"]:
                self.passwords.pop(account["id"].lower(), None)
            self.deleted.append(number)
            return Response(status_code=202)
        body = await request.json()
        if not isinstance(body, dict):
            return _error(400, "bad_request", "Invalid body.")
        if self.faults.concurrent_patches > 0:
            self.faults.concurrent_patches -= 1
            doc["metadata"]["version"] += 1
        sent = (body.get("metadata") or {}).get("version")
        if sent is not None and sent != doc["metadata"]["version"]:
            return _error(
                409,
                "optimistic_lock",
                f"Version {sent} is not the current version of customer {number}.",
            )
        for key, value in body.items():
            if key != "metadata":
                doc[key] = value
        doc["metadata"]["version"] += 1
        return Response(status_code=200)


def _matches(doc: dict[str, Any], name: str, value: str) -> bool:
    if name == "contactEmail":
        return str(doc.get("contactEmail", "")).lower() == value.lower()
    current: Any = doc
    for part in name.split("."):
        if not isinstance(current, dict):
            return False
        current = current.get(part)
    return current is not None and str(current) == value


def running(
    simulator: EmporixSimulator | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AbstractAsyncContextManager[EmporixSimulator]:
    sim = simulator or EmporixSimulator()
    return serving(sim, sim.app, host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    parser = standalone_parser("Emporix simulator for local runs and tests", port=8901)
    parser.add_argument("--tenant", default="acme")
    parser.add_argument("--storefront-client-id", default="dev-storefront")
    parser.add_argument("--client-secret", default="dev-secret")
    args = parser.parse_args(argv)
    sim = EmporixSimulator(
        tenant=args.tenant,
        storefront_client_id=args.storefront_client_id,
        client_secret=args.client_secret,
    )
    serve_forever("Emporix simulator", running(sim, host=args.host, port=args.port))


if __name__ == "__main__":
    main()
