"""A Medusa v2 on loopback: the subset the registration service uses, over real HTTP.

As Medusa behaves at medusajs/medusa@59e6747800133e091d20c2c167f600981abc5c0d (its source, where
it and the OpenAPI files disagree; ``activities/providers/medusa.py`` lists where): one login
(auth identity, ``emailpass``) per email across actor types (an admin user and a customer share
it), HS256 JWTs that expire (``actor_id`` = the login's customer, empty for a login without one),
the publishable key check on ``/store``, admin secret keys as HTTP Basic ``sk_...:``, strict body
validation (400 "Unrecognized fields"), the 401 ``Identity with email already exists``, 422
``duplicate_error`` for a second account customer, guest and account customers apart (unique on
email and ``has_account``), soft delete that unbinds the login, and 200 (never 201) answers.
Error bodies are ``{type, message}``; the auth middleware's 401 is ``{message: "Unauthorized"}``.

Fault switches (``Faults``, set whole or with ``set_faults``): ``latency_seconds``; of the requests
that ``path_prefix`` and ``method`` select, ``error_rate`` answer ``error_status`` (503), a
``disconnect_rate`` are dropped unhandled, a ``lost_answer_rate`` handled and their answer lost;
``limit`` caps how many. Every request is recorded (``requests``) with its body and status.

Run alone: ``python -m tests.simulators.medusa --port 9000`` prints the variables to use.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import random
import secrets
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.simulators.loopback import (
    draw_fault,
    hang_up,
    json_or_text,
    recording,
    serve_forever,
    serving,
    standalone_parser,
)

STORE_CREATE_FIELDS = {"email", "company_name", "first_name", "last_name", "phone"}
ADMIN_CUSTOMER_FIELDS = STORE_CREATE_FIELDS | {"metadata"}


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"type": kind, "message": message}, status_code=status)


UNAUTHORIZED = {"message": "Unauthorized"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Faults:
    latency_seconds: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    disconnect_rate: float = 0.0
    lost_answer_rate: float = 0.0
    limit: int | None = None
    path_prefix: str = "/"
    method: str = ""


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    lost: bool = False
    response: Any = None


@dataclass
class MedusaSimulator:
    publishable_key: str = "pk_test_registration"
    secret_api_key: str = "sk_test_registration"
    jwt_secret: str = "supersecret"
    token_lifetime_seconds: float = 86400.0
    seed: int = 0
    base_url: str = ""
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By email: ``{id, email, password, app_metadata}``."""
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    clock_offset: float = 0.0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        routes = [
            Route("/auth/customer/emailpass/register", self._register, methods=["POST"]),
            Route("/auth/customer/emailpass", self._login, methods=["POST"]),
            Route("/store/customers", self._store_create, methods=["POST"]),
            Route("/admin/customers", self._admin_list, methods=["GET"]),
            Route("/admin/customers", self._admin_create, methods=["POST"]),
            Route("/admin/customers/{id}", self._admin_get, methods=["GET"]),
            Route("/admin/customers/{id}", self._admin_update, methods=["POST"]),
            Route("/admin/customers/{id}", self._admin_delete, methods=["DELETE"]),
        ]
        self.app: ASGIApp = self._middleware(Starlette(routes=routes))

    # State for tests ------------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> Faults:
        self.faults = dataclasses.replace(self.faults, **changes)
        return self.faults

    def reset_faults(self) -> None:
        self.faults = Faults()

    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on."""
        self.clock_offset += self.token_lifetime_seconds + 1

    def add_identity(
        self, email: str, password: str, app_metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        identity = {
            "id": f"authid_{secrets.token_hex(8)}",
            "email": email,
            "password": hashlib.sha256(password.encode()).hexdigest(),
            "app_metadata": dict(app_metadata or {}),
        }
        self.identities[email] = identity
        return identity

    def add_admin_user(self, email: str, password: str) -> dict[str, Any]:
        return self.add_identity(email, password, {"user_id": f"user_{secrets.token_hex(6)}"})

    def add_customer(
        self, email: str, *, has_account: bool = False, password: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """A customer (an imported guest by default); with ``password``, an account customer
        bound to a login of that password."""
        customer = self._new_customer({"email": email, **fields}, has_account=has_account)
        if password is not None:
            identity = self.identities.get(email) or self.add_identity(email, password)
            identity["app_metadata"]["customer_id"] = customer["id"]
        return customer

    def live_customers(self, email: str | None = None) -> list[dict[str, Any]]:
        return [
            c
            for c in self.customers.values()
            if c["deleted_at"] is None and (email is None or c["email"] == email)
        ]

    def env(self) -> dict[str, str]:
        """The ``REGISTRATION_MEDUSA_*`` variables that point the service at this simulator."""
        return {
            "REGISTRATION_MEDUSA_BASE_URL": self.base_url,
            "REGISTRATION_MEDUSA_PUBLISHABLE_KEY": self.publishable_key,
            "REGISTRATION_MEDUSA_SECRET_API_KEY": self.secret_api_key,
        }

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.path == path)

    # Transport ------------------------------------------------------------------------------

    def _middleware(self, app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            record = RecordedRequest(
                scope["method"], scope["path"], scope["query_string"].decode(), None, headers
            )
            self.requests.append(record)

            def body(raw: bytes) -> None:
                record.body = json_or_text(raw)

            def response(message: Message) -> None:
                if message["type"] == "http.response.body" and message.get("body"):
                    try:
                        record.response = json.loads(message["body"])
                    except ValueError:
                        record.response = message["body"]

            recording_receive, recording_send = recording(receive, send, record, body, response)

            faults = self.faults
            selected = scope["path"].startswith(faults.path_prefix) and (
                not faults.method or faults.method == scope["method"]
            )
            if not selected:
                await app(scope, recording_receive, recording_send)
                return
            if faults.latency_seconds:
                await asyncio.sleep(faults.latency_seconds)
            rates = [
                ("error", faults.error_rate),
                ("disconnect", faults.disconnect_rate),
                ("lost", faults.lost_answer_rate),
            ]
            fault = draw_fault(faults, self._random.random(), rates)
            if fault == "error":
                answer = _error(faults.error_status, "unknown_error", "simulated failure")
                await answer(scope, recording_receive, recording_send)
            elif fault in ("disconnect", "lost"):
                handle = app if fault == "lost" else None
                await hang_up(scope, recording_receive, send, record, handle)
            else:
                await app(scope, recording_receive, recording_send)

        return middleware

    # Tokens ---------------------------------------------------------------------------------

    def _jwt(self, identity: dict[str, Any]) -> str:
        customer_id = identity["app_metadata"].get("customer_id")
        now = int(time.time() + self.clock_offset)
        payload = {
            "actor_id": customer_id or "",
            "actor_type": "customer",
            "auth_identity_id": identity["id"],
            "app_metadata": {"customer_id": customer_id},
            "iat": now,
            "exp": now + int(self.token_lifetime_seconds),
        }
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(payload).encode())
        signature = hmac.new(self.jwt_secret.encode(), f"{head}.{body}".encode(), "sha256")
        return f"{head}.{body}.{_b64(signature.digest())}"

    def _claims(self, request: Request) -> dict[str, Any] | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.count(".") != 2:
            return None
        head, body, signature = token.split(".")
        expected = hmac.new(self.jwt_secret.encode(), f"{head}.{body}".encode(), "sha256")
        if not hmac.compare_digest(_b64(expected.digest()), signature):
            return None
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if claims["exp"] <= time.time() + self.clock_offset:
            return None
        return claims

    def _admin_ok(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, _ = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(user, self.secret_api_key)

    # Auth -----------------------------------------------------------------------------------

    async def _email_password(self, request: Request) -> tuple[str, str] | Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        email, password = body.get("email"), body.get("password")
        if not isinstance(password, str) or not password:
            return _error(401, "unauthorized", "Password should be a string")
        if not isinstance(email, str) or not email:
            return _error(401, "unauthorized", "Email should be a string")
        return email, password

    async def _register(self, request: Request) -> Response:
        given = await self._email_password(request)
        if isinstance(given, Response):
            return given
        email, password = given
        if email in self.identities:
            return _error(401, "unauthorized", "Identity with email already exists")
        return JSONResponse({"token": self._jwt(self.add_identity(email, password))})

    async def _login(self, request: Request) -> Response:
        given = await self._email_password(request)
        if isinstance(given, Response):
            return given
        email, password = given
        identity = self.identities.get(email)
        digest = hashlib.sha256(password.encode()).hexdigest()
        if identity is None or not hmac.compare_digest(identity["password"], digest):
            return _error(401, "unauthorized", "Invalid email or password")
        return JSONResponse({"token": self._jwt(identity)})

    # Customers ------------------------------------------------------------------------------

    def _new_customer(self, data: dict[str, Any], *, has_account: bool) -> dict[str, Any]:
        now, customer_id = _now(), f"cus_{secrets.token_hex(10).upper()}"
        customer: dict[str, Any] = {
            "id": customer_id,
            "email": data.get("email"),
            "company_name": data.get("company_name"),
            "first_name": data.get("first_name"),
            "last_name": data.get("last_name"),
            "phone": data.get("phone"),
            "has_account": has_account,
            "metadata": data.get("metadata"),
            "created_by": data.get("created_by"),
            "created_at": now,
            "updated_at": now,
            "deleted_at": None,
        }
        self.customers[customer_id] = customer
        return customer

    @staticmethod
    def _view(customer: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in customer.items() if k != "created_by"} | {
            "addresses": [],
            "groups": [],
            "default_billing_address_id": None,
            "default_shipping_address_id": None,
        }

    @staticmethod
    async def _strict(request: Request, allowed: set[str]) -> dict[str, Any] | Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_data", "Invalid request: body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "invalid_data", "Invalid request: Expected object")
        unknown = sorted(set(body) - allowed)
        if unknown:
            message = f"Invalid request: Unrecognized fields: '{', '.join(unknown)}'"
            return _error(400, "invalid_data", message)
        for key, value in body.items():
            if key == "metadata":
                if value is not None and not isinstance(value, dict):
                    return _error(400, "invalid_data", "Invalid request: metadata")
            elif value is not None and not isinstance(value, str):
                return _error(400, "invalid_data", f"Invalid request: {key} must be a string")
        if body.get("email") is not None and "@" not in body["email"]:
            return _error(400, "invalid_data", "Invalid request: Invalid email")
        return body

    async def _store_create(self, request: Request) -> Response:
        if request.headers.get("x-publishable-api-key") != self.publishable_key:
            return _error(
                400,
                "not_allowed",
                "Publishable API key required in the request header: x-publishable-api-key.",
            )
        claims = self._claims(request)
        if claims is None or claims.get("actor_type") != "customer":
            return JSONResponse(UNAUTHORIZED, status_code=401)
        body = await self._strict(request, STORE_CREATE_FIELDS)
        if isinstance(body, Response):
            return body
        if claims["actor_id"]:
            return _error(400, "invalid_data", "Request already authenticated as a customer.")
        email = body.get("email")
        if not email:
            return _error(400, "invalid_data", "Email is required to create a customer")
        if any(c["has_account"] for c in self.live_customers(email)):
            return _error(422, "duplicate_error", "Customer with this email already has an account")
        identity = next(
            (i for i in self.identities.values() if i["id"] == claims["auth_identity_id"]), None
        )
        if identity is None:
            return _error(404, "not_found", "AuthIdentity not found")
        customer = self._new_customer(body, has_account=True)
        identity["app_metadata"]["customer_id"] = customer["id"]
        return JSONResponse({"customer": self._view(customer)})

    async def _admin_list(self, request: Request) -> Response:
        if not self._admin_ok(request):
            return JSONResponse(UNAUTHORIZED, status_code=401)
        query = request.query_params
        found = self.live_customers(query.get("email"))
        if "has_account" in query:
            wanted = query["has_account"] == "true"
            found = [c for c in found if c["has_account"] is wanted]
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 50))
        page = [self._view(c) for c in found[offset : offset + limit]]
        return JSONResponse(
            {"customers": page, "count": len(found), "offset": offset, "limit": limit}
        )

    async def _admin_create(self, request: Request) -> Response:
        if not self._admin_ok(request):
            return JSONResponse(UNAUTHORIZED, status_code=401)
        body = await self._strict(request, ADMIN_CUSTOMER_FIELDS)
        if isinstance(body, Response):
            return body
        if any(not c["has_account"] for c in self.live_customers(body.get("email"))):
            return _error(422, "duplicate_error", "Customer with email already exists")
        customer = self._new_customer({**body, "created_by": "apk_sim"}, has_account=False)
        return JSONResponse({"customer": self._view(customer)})

    def _live(self, request: Request) -> dict[str, Any] | None:
        customer = self.customers.get(request.path_params["id"])
        return customer if customer is not None and customer["deleted_at"] is None else None

    async def _admin_get(self, request: Request) -> Response:
        if not self._admin_ok(request):
            return JSONResponse(UNAUTHORIZED, status_code=401)
        customer = self._live(request)
        if customer is None:
            customer_id = request.path_params["id"]
            return _error(404, "not_found", f"Customer with id: {customer_id} not found")
        return JSONResponse({"customer": self._view(customer)})

    async def _admin_update(self, request: Request) -> Response:
        if not self._admin_ok(request):
            return JSONResponse(UNAUTHORIZED, status_code=401)
        customer = self._live(request)
        if customer is None:
            customer_id = request.path_params["id"]
            return _error(404, "not_found", f'Customer with id "{customer_id}" not found')
        body = await self._strict(request, ADMIN_CUSTOMER_FIELDS)
        if isinstance(body, Response):
            return body
        customer.update(body)
        customer["updated_at"] = _now()
        return JSONResponse({"customer": self._view(customer)})

    async def _admin_delete(self, request: Request) -> Response:
        """Soft delete, and the login bound to it unbound; 200 for an id that names none."""
        if not self._admin_ok(request):
            return JSONResponse(UNAUTHORIZED, status_code=401)
        customer_id = request.path_params["id"]
        customer = self._live(request)
        if customer is not None:
            customer["deleted_at"] = _now()
            for identity in self.identities.values():
                if identity["app_metadata"].get("customer_id") == customer_id:
                    identity["app_metadata"]["customer_id"] = None
        return JSONResponse({"id": customer_id, "object": "customer", "deleted": True})


def running(
    simulator: MedusaSimulator | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AbstractAsyncContextManager[MedusaSimulator]:
    sim = simulator or MedusaSimulator()
    return serving(sim, sim.app, host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    parser = standalone_parser("Medusa simulator for local runs and tests", port=9000)
    parser.add_argument("--token-lifetime", type=float, default=86400.0, help="seconds")
    args = parser.parse_args(argv)
    sim = MedusaSimulator(token_lifetime_seconds=args.token_lifetime)
    serve_forever("Medusa simulator", running(sim, host=args.host, port=args.port))


if __name__ == "__main__":
    main()
