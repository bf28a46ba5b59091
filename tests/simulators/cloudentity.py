"""A Cloudentity identity pool on loopback: the system API subset the registration service uses.

Modelled on the ``identitysystem`` Swagger file (shared/specs/cloudentity) and the custom
registration tutorial (seed 004): a client-credentials token endpoint at
``/{tenant}/system/oauth2/token`` granting the client's allowed scopes (each endpoint checks its
scope from the Swagger ``security``: 403 without it; 401 for a missing or expired token), users
with unique identifiers (409) and ids, the ``new -> active`` status machine (activation fails
unless ``new``), one valid activation code per user that expires (``code_ttl_seconds``) and is
replaced by the next, the brute-force lock (``max_wrong_codes`` wrong codes: 429 until
``lockout_seconds`` pass), an ETag on every user answer and ``If-Match`` checked on writes
(412), ``X-Idempotency-Key`` replay of POSTs within 60 s (answered as the first, with
``X-Idempotent-Replayed: true``), ``by_key`` finding users by identifier or by *verified* address
only, and the documented error body ``{status_code, error, error_code, details}``.

ASSUMPTIONS shared with the adapter (activities/providers/cloudentity.py): a wrong or expired
code is answered 400 ``invalid_code``; codes are ``code_length`` digits.

Fault switches (``Faults``): ``error_rate`` answers 503, ``lost_answer_rate`` handles the request
and drops the connection after the answer's head (done, but unanswered), ``latency_seconds``
delays; each for requests whose path starts with ``path_prefix`` (and ``method``, if set),
at most ``limit`` of them.

Every request is recorded (``requests``) with its answer; the token request without its body,
a create's password as ``***``. Run alone: ``python -m tests.simulators.cloudentity``.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.simulators.loopback import serve_forever, serving, standalone_parser

TENANT, POOL = "acme", "customers"
ALL_SCOPES = ("identity", "identity_self_registration", "manage_configuration")
IDEMPOTENCY_WINDOW = 60.0


def error(status: int, message: str, code: str, details: Any = None) -> JSONResponse:
    """The documented error body (Swagger ``Error``)."""
    body: dict[str, Any] = {"status_code": status, "error": message, "error_code": code}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status)


@dataclass
class Faults:
    error_rate: float = 0.0
    lost_answer_rate: float = 0.0
    latency_seconds: float = 0.0
    path_prefix: str = "/"
    method: str = ""
    limit: int | None = None
    seed: int = 1
    reject_metadata: bool = False
    """``systemUpdateUser`` refuses any ``metadata`` (422): the pool's metadata schema lacks the
    customer fields (a setup mistake). Ignores ``path_prefix``."""
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def selects(self, request: Request) -> bool:
        path = request.url.path
        return (
            not path.startswith("/_sim")
            and path.startswith(self.path_prefix)
            and (not self.method or request.method == self.method)
        )

    def draw(self, rate: float) -> bool:
        if rate <= 0 or self.limit == 0:
            return False
        if self.rng.random() < rate:
            if self.limit is not None:
                self.limit -= 1
            return True
        return False


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    status: int = 0
    response: Any = None
    response_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Code:
    value: str
    expires: float


class LostAnswer(Exception):
    """Raised after handling: the connection is dropped instead of answering."""


class CloudentitySimulator:
    def __init__(
        self,
        *,
        client_id: str = "registration-service",
        client_secret: str | None = None,
        client_scopes: tuple[str, ...] = ("identity", "identity_self_registration"),
        token_lifetime: int = 3600,
        code_length: int = 8,
        code_ttl_seconds: float = 600.0,
        max_wrong_codes: int = 5,
        lockout_seconds: float = 300.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(16)
        self.client_scopes = client_scopes
        self.token_lifetime = token_lifetime
        self.code_length = code_length
        self.code_ttl_seconds = code_ttl_seconds
        self.max_wrong_codes = max_wrong_codes
        self.lockout_seconds = lockout_seconds
        self.clock: Callable[[], float] = time.monotonic
        self.users: dict[str, dict[str, Any]] = {}
        self.passwords: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        self.codes: dict[str, Code] = {}
        self.issued_codes: list[tuple[str, str]] = []
        """Every code generated, (user id, code), oldest first."""
        self.wrong: dict[str, list[float]] = {}
        self.tokens: dict[str, tuple[tuple[str, ...], float]] = {}
        self.token_requests = 0
        self.idempotency: dict[str, tuple[float, str, int, Any, dict[str, str]]] = {}
        self.requests: list[Recorded] = []
        self.faults = Faults()
        self.base_url = ""
        api = f"/api/identity/{TENANT}/system/pools/{{ipID}}"
        self.app = Starlette(
            routes=[
                Route(f"/{TENANT}/system/oauth2/token", self._token, methods=["POST"]),
                Route(f"{api}/users", self._create, methods=["POST"]),
                Route(f"{api}/users/by_key", self._by_key, methods=["POST"]),
                Route(f"{api}/user/code/generate", self._generate, methods=["POST"]),
                Route(f"{api}/users/{{userID}}", self._get, methods=["GET"]),
                Route(f"{api}/users/{{userID}}", self._update, methods=["PUT"]),
                Route(f"{api}/users/{{userID}}", self._delete, methods=["DELETE"]),
                Route(f"{api}/users/{{userID}}/activate", self._activate, methods=["POST"]),
                Route(
                    f"{api}/users/{{userID}}/addresses/update",
                    self._update_address,
                    methods=["POST"],
                ),
            ]
        )

    # Switches and state ------------------------------------------------------------------------

    def set_faults(self, **switches: Any) -> None:
        self.faults = Faults(**switches)

    def reset_faults(self) -> None:
        self.faults = Faults()

    def expire_tokens(self) -> None:
        """Every issued token stops working (the next call answers 401)."""
        self.tokens.clear()

    def env(self) -> dict[str, str]:
        """The ``REGISTRATION_CLOUDENTITY_*`` variables that point the service at this simulator."""
        return {
            "REGISTRATION_CLOUDENTITY_BASE_URL": self.base_url,
            "REGISTRATION_CLOUDENTITY_TENANT": TENANT,
            "REGISTRATION_CLOUDENTITY_POOL_ID": POOL,
            "REGISTRATION_CLOUDENTITY_CLIENT_ID": self.client_id,
            "REGISTRATION_CLOUDENTITY_CLIENT_SECRET": self.client_secret,
            "REGISTRATION_CLOUDENTITY_CODE_LENGTH": str(self.code_length),
        }

    def etag(self, user_id: str) -> str:
        return f'W/"{user_id}-{self.versions[user_id]}"'

    def bump(self, user_id: str) -> None:
        self.versions[user_id] += 1
        self.users[user_id]["updated_at"] = _now()

    def add_user(
        self, email: str, *, status: str = "active", verified: bool = True, **extra: Any
    ) -> dict[str, Any]:
        """A user made elsewhere (staff, another flow)."""
        user_id = str(uuid.uuid4())
        self._store(
            user_id,
            {
                "status": status,
                "identifiers": [{"identifier": email, "type": "email"}],
                "verifiable_addresses": [
                    {"address": email, "type": "email", "status": "active", "verified": verified}
                ],
                **extra,
            },
        )
        return self.users[user_id]

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        for user in self.users.values():
            if any(i["identifier_lc"] == email.lower() for i in user["identifiers"]):
                return user
        return None

    # Plumbing ---------------------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    async def _recorded(
        self, request: Request, scope_needed: str | None, handle: Callable[[Any], Response]
    ) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"}
        record = Recorded(request.method, request.url.path, _without_passwords(body), headers)
        self.requests.append(record)
        faults = self.faults
        selected = faults.selects(request)
        if selected and faults.latency_seconds:
            await asyncio.sleep(faults.latency_seconds)
        if selected and faults.draw(faults.error_rate):
            response: Response = error(503, "service unavailable", "service_unavailable")
        else:
            response = self._authorized(request, scope_needed) or self._idempotent(
                request, raw, lambda: handle(body)
            )
        record.status = response.status_code
        record.response = json.loads(bytes(response.body)) if response.body else None
        record.response_headers = {k.lower(): v for k, v in response.headers.items()}
        if selected and faults.draw(faults.lost_answer_rate):
            request.scope["sim.lost"] = True
        return response

    def _authorized(self, request: Request, needed: str | None) -> Response | None:
        if needed is None:
            return None
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        granted = self.tokens.get(token)
        if granted is None or granted[1] <= self.clock():
            return error(401, "invalid or expired access token", "unauthorized")
        if needed not in granted[0]:
            return error(403, f"the token lacks the {needed} scope", "insufficient_scope")
        if request.path_params.get("ipID") != POOL:
            return error(404, "identity pool not found", "not_found")
        return None

    def _idempotent(self, request: Request, raw: bytes, handle: Callable[[], Response]) -> Response:
        key = request.headers.get("x-idempotency-key")
        if request.method != "POST" or key is None:
            return handle()
        if not 32 <= len(key) <= 255:
            return error(400, "idempotency key must be 32-255 characters", "bad_request")
        now = self.clock()
        self.idempotency = {
            k: v for k, v in self.idempotency.items() if now - v[0] < IDEMPOTENCY_WINDOW
        }
        earlier = self.idempotency.get(key)
        if earlier is not None:
            _, path, status, body, headers = earlier
            if path != request.url.path:
                return error(422, "idempotency key reused for another request", "bad_request")
            return JSONResponse(body, status, headers={**headers, "X-Idempotent-Replayed": "true"})
        response = handle()
        if response.status_code < 500:
            body = json.loads(bytes(response.body)) if response.body else None
            kept = {k: v for k, v in response.headers.items() if k.lower() == "etag"}
            self.idempotency[key] = (now, request.url.path, response.status_code, body, kept)
        return response

    def _user_response(self, user_id: str, status: int = 200) -> JSONResponse:
        return JSONResponse(self.users[user_id], status, headers={"ETag": self.etag(user_id)})

    def _precondition(self, request: Request, user_id: str) -> Response | None:
        match = request.headers.get("if-match")
        if match is not None and match != self.etag(user_id):
            return error(412, "etag mismatch", "precondition_failed")
        return None

    def _store(self, user_id: str, body: dict[str, Any]) -> None:
        now = _now()
        user = {
            "id": user_id,
            "tenant_id": TENANT,
            "user_pool_id": POOL,
            "status": body["status"],
            "payload": body.get("payload") or {},
            "metadata": body.get("metadata") or {},
            "payload_schema_id": "default_payload",
            "metadata_schema_id": "default_metadata",
            "created_at": now,
            "updated_at": now,
            "status_updated_at": now,
            "identifiers": [
                {
                    "id": str(uuid.uuid4()),
                    "tenant_id": TENANT,
                    "user_pool_id": POOL,
                    "user_id": user_id,
                    "identifier": i["identifier"],
                    "identifier_lc": i["identifier"].lower(),
                    "type": i["type"],
                    "created_at": now,
                    "updated_at": now,
                }
                for i in body.get("identifiers") or []
            ],
            "verifiable_addresses": [
                {
                    "id": str(uuid.uuid4()),
                    "tenant_id": TENANT,
                    "user_pool_id": POOL,
                    "user_id": user_id,
                    "address": a["address"],
                    "address_lc": a["address"].lower(),
                    "type": a["type"],
                    "status": a["status"],
                    "verified": a["verified"],
                    "created_at": now,
                    "updated_at": now,
                }
                for a in body.get("verifiable_addresses") or []
            ],
            "credentials": [
                {
                    "id": str(uuid.uuid4()),
                    "tenant_id": TENANT,
                    "user_pool_id": POOL,
                    "user_id": user_id,
                    "type": "password",
                    "payload": {"hashed_password": "###"},
                    "state": "valid",
                    "created_at": now,
                    "updated_at": now,
                }
                for c in body.get("credentials") or []
                if c.get("type") == "password"
            ],
        }
        for c in body.get("credentials") or []:
            if c.get("type") == "password":
                self.passwords[user_id] = c.get("password", "")
        self.users[user_id] = user
        self.versions[user_id] = 1

    # Endpoints --------------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        raw = (await request.body()).decode()
        form = {k: v[0] for k, v in parse_qs(raw).items()}
        self.requests.append(Recorded("POST", request.url.path, None, {}))
        self.token_requests += 1
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if (form.get("client_id"), form.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return JSONResponse({"error": "invalid_client"}, 401)
        # The scopes asked that the client may have (RFC 6749 3.3 lets a server grant fewer):
        # an endpoint then refuses a token without its scope (403).
        asked = tuple(s for s in (form.get("scope") or "").split() if s in self.client_scopes)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = (asked, self.clock() + self.token_lifetime)
        self.requests[-1].status = 200
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.token_lifetime,
                "scope": " ".join(asked),
            }
        )

    async def _create(self, request: Request) -> Response:
        def handle(body: Any) -> Response:
            if not isinstance(body, dict) or body.get("status") not in (
                "active",
                "inactive",
                "deleted",
                "new",
            ):
                return error(400, "invalid user", "bad_request")
            user_id = body.get("id") or str(uuid.uuid4())
            if user_id in self.users:
                return error(409, "user already exists", "conflict")
            for i in body.get("identifiers") or []:
                if self.user_by_email(i["identifier"]) is not None:
                    return error(409, "identifier already exists", "conflict", {"field": "id"})
            if not isinstance(body.get("payload", {}), dict) or not isinstance(
                body.get("metadata", {}), dict
            ):
                return error(422, "payload does not match the schema", "validation_error")
            self._store(user_id, body)
            return self._user_response(user_id, 201)

        return await self._recorded(request, "identity", handle)

    async def _by_key(self, request: Request) -> Response:
        def handle(body: Any) -> Response:
            if not isinstance(body, dict) or bool(body.get("identifier")) == bool(
                body.get("address")
            ):
                return error(400, "provide one of identifier or address", "bad_request")
            if body.get("identifier"):
                user = self.user_by_email(str(body["identifier"]))
            else:
                address = str(body["address"]).lower()
                user = next(
                    (
                        u
                        for u in self.users.values()
                        for a in u["verifiable_addresses"]
                        if a["address_lc"] == address and a["verified"]
                    ),
                    None,
                )
            if user is None:
                return error(404, "user not found", "not_found")
            return self._user_response(user["id"])

        return await self._recorded(request, "identity", handle)

    async def _get(self, request: Request) -> Response:
        user_id = request.path_params["userID"]

        def handle(_: Any) -> Response:
            if user_id not in self.users:
                return error(404, "user not found", "not_found")
            return self._user_response(user_id)

        return await self._recorded(request, "identity", handle)

    async def _update(self, request: Request) -> Response:
        user_id = request.path_params["userID"]

        def handle(body: Any) -> Response:
            if user_id not in self.users:
                return error(404, "user not found", "not_found")
            if failed := self._precondition(request, user_id):
                return failed
            if not isinstance(body, dict):
                return error(400, "invalid body", "bad_request")
            user = self.users[user_id]
            if self.faults.reject_metadata and "metadata" in body:
                return error(422, "metadata does not match the schema", "validation_error")
            for key in ("payload", "metadata"):
                if key in body:
                    if not isinstance(body[key], dict):
                        return error(422, f"{key} does not match the schema", "validation_error")
                    user[key] = body[key]
            if body.get("status"):
                if body["status"] != user["status"]:
                    user["status_updated_at"] = _now()
                user["status"] = body["status"]
            self.bump(user_id)
            return self._user_response(user_id)

        return await self._recorded(request, "identity", handle)

    async def _delete(self, request: Request) -> Response:
        user_id = request.path_params["userID"]

        def handle(_: Any) -> Response:
            if user_id not in self.users:
                return error(404, "user not found", "not_found")
            if failed := self._precondition(request, user_id):
                return failed
            del self.users[user_id]
            self.codes.pop(user_id, None)
            return Response(status_code=204)

        return await self._recorded(request, "identity", handle)

    async def _generate(self, request: Request) -> Response:
        def handle(body: Any) -> Response:
            if not isinstance(body, dict) or body.get("type") != "activation":
                return error(400, "only activation codes are simulated", "bad_request")
            user_id = body.get("userID")
            if not user_id and body.get("identifier"):
                found = self.user_by_email(str(body["identifier"]))
                user_id = found["id"] if found else None
            if not user_id or user_id not in self.users:
                return error(404, "user not found", "not_found")
            code = "".join(secrets.choice("0123456789") for _ in range(self.code_length))
            self.codes[user_id] = Code(code, self.clock() + self.code_ttl_seconds)
            self.issued_codes.append((user_id, code))
            extended = secrets.token_urlsafe(24)
            return JSONResponse(
                {"code": code, "extended_code": extended},
                201,
                headers={"ETag": self.etag(user_id)},
            )

        return await self._recorded(request, "identity_self_registration", handle)

    async def _activate(self, request: Request) -> Response:
        user_id = request.path_params["userID"]

        def handle(body: Any) -> Response:
            if user_id not in self.users:
                return error(404, "user not found", "not_found")
            if not isinstance(body, dict) or not isinstance(body.get("code"), str):
                return error(400, "code is required", "bad_request")
            now = self.clock()
            recent = [t for t in self.wrong.get(user_id, []) if now - t < self.lockout_seconds]
            self.wrong[user_id] = recent
            if len(recent) >= self.max_wrong_codes:
                return error(429, "too many failed attempts", "brute_force_lock")
            user = self.users[user_id]
            if user["status"] != "new":
                return error(400, "user is not new", "invalid_user_status")
            issued = self.codes.get(user_id)
            if issued is None or issued.expires <= now or issued.value != body["code"]:
                recent.append(now)
                return error(400, "invalid code", "invalid_code")
            del self.codes[user_id]
            user["status"] = "active"
            user["status_updated_at"] = _now()
            for address in user["verifiable_addresses"]:
                if address["type"] == "email":
                    address["verified"] = True
                    address["verified_at"] = _now()
            self.bump(user_id)
            return self._user_response(user_id, 201)

        return await self._recorded(request, "identity", handle)

    async def _update_address(self, request: Request) -> Response:
        user_id = request.path_params["userID"]

        def handle(body: Any) -> Response:
            if user_id not in self.users:
                return error(404, "user not found", "not_found")
            if failed := self._precondition(request, user_id):
                return failed
            if not isinstance(body, dict) or not body.get("address"):
                return error(400, "address is required", "bad_request")
            user = self.users[user_id]
            for address in user["verifiable_addresses"]:
                if address["address_lc"] == str(body["address"]).lower():
                    address["verified"] = bool(body.get("verified"))
                    address["status"] = body.get("status", address["status"])
                    if address["verified"]:
                        address["verified_at"] = _now()
                    self.bump(user_id)
                    return JSONResponse(address, headers={"ETag": self.etag(user_id)})
            return error(404, "address not found", "not_found")

        return await self._recorded(request, "identity", handle)


def _without_passwords(body: Any) -> Any:
    """A create's body as recorded: its password credentials' values replaced by ``***``."""
    if not isinstance(body, dict) or not isinstance(body.get("credentials"), list):
        return body
    credentials = [
        {**c, "password": "***"} if isinstance(c, dict) and "password" in c else c
        for c in body["credentials"]
    ]
    return {**body, "credentials": credentials}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _Dropping:
    """ASGI wrapper: an answer marked lost (``lost_answer_rate``) sends its head, then the
    connection is closed before its body: done at the server, unanswered at the client."""

    def __init__(self, sim: CloudentitySimulator) -> None:
        self.sim = sim

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def dropping(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.start" and scope.get("sim.lost"):
                raise LostAnswer

        try:
            await self.sim.app(scope, receive, dropping)
        except LostAnswer:
            raise RuntimeError("simulated lost answer") from None


def running(
    sim: CloudentitySimulator | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AbstractAsyncContextManager[CloudentitySimulator]:
    simulator = sim or CloudentitySimulator()
    return serving(simulator, _Dropping(simulator), host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    parser = standalone_parser("Cloudentity identity pool simulator", port=8901)
    args = parser.parse_args(argv)
    sim = CloudentitySimulator(client_secret="dev-secret")
    serve_forever("Cloudentity simulator", running(sim, host=args.host, port=args.port))


if __name__ == "__main__":
    main()
