"""The JSON API under ``/v1``, the staff endpoints, ``/healthz`` and ``/readyz``, as a FastAPI app;
the hosted pages (``pages.py``) are served by the same app.

Every error is a problem (``problems.py``). The routes call ``RegistrationClient`` and map its
verdicts to statuses; they never reach a provider. See docs/api.md for the whole contract.
"""

import hmac
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits.errors import StorageError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.keys import KeyConfigError
from common.settings import InvalidSettings, Settings
from starter.client import (
    Busy,
    InvalidInput,
    NotPending,
    NoWorkerAnswered,
    RegistrationClient,
    SealKeyMismatch,
    ServerUnreachable,
    UnknownRegistration,
)
from starter.http.backend import Backend
from starter.http.limiting import Limits, Network, Refused, client_address, storage_for
from starter.http.models import (
    Accepted,
    Activated,
    ActivationRequest,
    ApprovalRequest,
    CancelRequest,
    Health,
    RegistrationRequest,
    ResendRequest,
    ResendSent,
    StaffAccepted,
)
from starter.http.pages import add_pages
from starter.http.problems import MEDIA_TYPE, FieldError, Problem, documented, problem
from workflows.models import (
    ActivationOutcome,
    ActivationReply,
    RegistrationStatus,
    ResendOutcome,
    ResendReply,
)

log = logging.getLogger("starter.http")
access_log = logging.getLogger("starter.http.access")

API_VERSION = "1.0.0"
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="A new unguessable id (a UUID) per call; a retry with the same key gets the"
        " first call's answer and costs no second attempt (the client's ``request_id``).",
    ),
]
_bearer = HTTPBearer(auto_error=False, description="REGISTRATION_API_STAFF_TOKEN")


class ApiError(Exception):
    """A problem raised from inside a route (rate limits, staff auth)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def create_app(
    settings: Settings, backend: Backend | None = None, limits: Limits | None = None
) -> FastAPI:
    """The API for ``settings``; ``backend`` (tests: one on their own Temporal client) and
    ``limits`` (shared counts) default to the configured ones."""
    backend = backend or Backend(settings)
    storage = settings.api_rate_limit_storage
    limits = limits or Limits(
        settings.api_rate_limit_per_address,
        settings.api_rate_limit_per_email,
        storage_for(storage.get_secret_value() if storage else None),
    )
    trusted: Sequence[Network] = list(settings.api_trusted_proxies)
    token = settings.api_staff_token.get_secret_value() if settings.api_staff_token else None
    app = FastAPI(
        title="Customer registration API",
        version=API_VERSION,
        description="Start registrations, activate them with the mailed code or link token,"
        " resend codes; staff endpoints with a bearer token. Errors are RFC 9457 problem"
        " details (application/problem+json). See docs/api.md.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.backend = backend
    app.state.limits = limits

    async def registrations() -> RegistrationClient:
        return await backend.registrations()

    Registrations = Annotated[RegistrationClient, Depends(registrations)]

    async def over_limit(
        request: Request, action: str, email: str, registrations: RegistrationClient
    ) -> Refused | None:
        address = client_address(
            request.client.host if request.client else None,
            ",".join(request.headers.getlist("x-forwarded-for")) or None,
            trusted,
        )
        return await limits.hit(action, address, registrations.registration_id(email))

    async def limited(
        request: Request, action: str, email: str, registrations: RegistrationClient
    ) -> None:
        refused = await over_limit(request, action, email, registrations)
        if refused is not None:
            raise ApiError(
                problem(
                    "rate-limited",
                    429,
                    f"too many {action} requests for this {refused.scope}: retry in"
                    f" {refused.retry_after} s",
                    headers={"Retry-After": str(refused.retry_after)},
                    retry_after=refused.retry_after,
                )
            )

    async def staff(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        given = credentials.credentials.encode("utf-8", "surrogateescape") if credentials else b""
        # Compared in constant time, also when no token is configured (nothing is accepted).
        expected = token.encode() if token is not None else None
        if not hmac.compare_digest(given, expected or b"\0" * 32) or expected is None:
            raise ApiError(
                problem(
                    "unauthorized",
                    401,
                    "staff endpoints need Authorization: Bearer <REGISTRATION_API_STAFF_TOKEN>",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            )

    Staff = Depends(staff)

    @app.post(
        "/v1/registrations",
        status_code=202,
        response_model=Accepted,
        responses=documented(400, 413, 415, 429, 503),
        tags=["customers"],
        summary="Start a registration",
    )
    async def register(
        body: RegistrationRequest, request: Request, registrations: Registrations
    ) -> Accepted:
        """Starts a registration and mails the code; the same 202 answer whether the address is
        new, pending (the code is sent again, within the resend throttle) or already has an
        account (its owner is told by mail). Retrying is safe: one registration per email."""
        await limited(request, "start", body.email, registrations)
        await registrations.register(
            email=body.email,
            name=body.name,
            password=body.password.get_secret_value(),
            phone=body.phone,
            locale=body.locale,
            profile=body.profile,
            metadata=body.metadata,
        )
        return Accepted()

    @app.post(
        "/v1/activations",
        response_model=Activated,
        responses=documented(
            400,
            403,
            409,
            410,
            413,
            415,
            422,
            429,
            503,
            s403="Too many attempts (``too-many-attempts``): ask for a new code",
            s409="Nothing pending (``not-pending``, also for an unknown address), the activation"
            " failed (``activation-failed``) or found an account (``already-registered``)",
            s410="The registration expired (``expired``)",
            s422="Wrong code (``invalid-code``) with ``attempts_left``",
        ),
        tags=["customers"],
        summary="Submit a code or link token",
    )
    async def activate(
        body: ActivationRequest,
        request: Request,
        registrations: Registrations,
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        """Checks the code (or link token); answers once the account is active."""
        await limited(request, "activate", body.email, registrations)
        try:
            reply = await registrations.submit_code(
                body.email, body.code, request_id=idempotency_key
            )
        except UnknownRegistration:
            reply = ActivationReply(outcome=ActivationOutcome.NOT_PENDING)
        return activation_response(reply)

    @app.post(
        "/v1/resends",
        status_code=202,
        response_model=ResendSent,
        responses=documented(
            400,
            409,
            413,
            415,
            429,
            503,
            s409="Nothing pending (``not-pending``) or no resends left (``resend-limit-reached``)",
            s429="Rate limited, or the resend throttle (``resend-throttled``): ``Retry-After``",
        ),
        tags=["customers"],
        summary="Mail a new code",
    )
    async def resend(
        body: ResendRequest,
        request: Request,
        registrations: Registrations,
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        """Mails a new code; the old one stops working."""
        await limited(request, "resend", body.email, registrations)
        return await resend_response(registrations, body.email, "customer", idempotency_key)

    @app.get(
        "/v1/staff/registrations/{email}",
        response_model=RegistrationStatus,
        responses=documented(400, 401, 404, 503),
        tags=["staff"],
        summary="A registration's status",
        dependencies=[Staff],
    )
    async def status(email: str, registrations: Registrations) -> RegistrationStatus:
        try:
            return await registrations.status(email)
        except UnknownRegistration:
            raise ApiError(unknown(email)) from None

    @app.post(
        "/v1/staff/registrations/{email}/approve",
        status_code=202,
        response_model=StaffAccepted,
        responses=documented(400, 401, 404, 409, 413, 415, 503),
        tags=["staff"],
        summary="Activate without a code",
        dependencies=[Staff],
    )
    async def approve(
        email: str, body: ApprovalRequest, registrations: Registrations
    ) -> StaffAccepted:
        await staff_action(registrations.approve(email, body.operator, body.reason), email)
        return StaffAccepted(action="approve")

    @app.post(
        "/v1/staff/registrations/{email}/cancel",
        status_code=202,
        response_model=StaffAccepted,
        responses=documented(400, 401, 404, 409, 413, 415, 503),
        tags=["staff"],
        summary="Cancel; what was done is undone",
        dependencies=[Staff],
    )
    async def cancel(
        email: str, body: CancelRequest, registrations: Registrations
    ) -> StaffAccepted:
        await staff_action(registrations.cancel(email, body.reason), email)
        return StaffAccepted(action="cancel")

    @app.post(
        "/v1/staff/registrations/{email}/resend",
        status_code=202,
        response_model=ResendSent,
        responses=documented(400, 401, 409, 429, 503),
        tags=["staff"],
        summary="Mail a new code",
        dependencies=[Staff],
    )
    async def staff_resend(
        email: str, registrations: Registrations, idempotency_key: IdempotencyKey = None
    ) -> Any:
        return await resend_response(registrations, email, "staff", idempotency_key)

    @app.get("/healthz", response_model=Health, tags=["operations"], summary="Process up")
    async def healthz() -> Health:
        return Health()

    @app.get(
        "/readyz",
        response_model=Health,
        responses=documented(503),
        tags=["operations"],
        summary="Temporal reachable and a worker polling the task queue",
    )
    async def readyz() -> Any:
        trouble = await backend.ready()
        if trouble is None and settings.api_rate_limit_storage is not None:
            try:
                if not await limits.check_storage():
                    trouble = "the rate limits' storage does not answer"
            except Exception:  # any failure of the storage means not ready
                trouble = "the rate limits' storage does not answer"
        if trouble is not None:
            return problem("unavailable", 503, trouble, headers={"Retry-After": "5"})
        return Health()

    add_pages(app, settings, backend, over_limit)
    _handle_errors(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.api_cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "Idempotency-Key", "Authorization"],
        expose_headers=["Retry-After"],
        max_age=600,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(AccessLog)
    return app


def unknown(email: str) -> Response:
    return problem("unknown-registration", 404, f"no registration for {email}")


async def staff_action(call: Awaitable[object], email: str) -> None:
    try:
        await call
    except UnknownRegistration:
        raise ApiError(unknown(email)) from None
    except NotPending as err:
        raise ApiError(problem("not-pending", 409, str(err), state=err.state)) from None


_ACTIVATION_PROBLEMS = {
    ActivationOutcome.INVALID_CODE: ("invalid-code", 422, "the code is not right"),
    ActivationOutcome.TOO_MANY_ATTEMPTS: (
        "too-many-attempts",
        403,
        "no attempts left for this code: ask for a new one",
    ),
    ActivationOutcome.EXPIRED: ("expired", 410, "the registration expired: register again"),
    ActivationOutcome.NOT_PENDING: ("not-pending", 409, "nothing is pending for this address"),
    ActivationOutcome.FAILED: (
        "activation-failed",
        409,
        "the code was right, but the activation failed and was undone: register again",
    ),
    ActivationOutcome.ALREADY_REGISTERED: (
        "already-registered",
        409,
        "the address already has an account: a mail tells its owner how to sign in",
    ),
}


def activation_response(reply: ActivationReply) -> Any:
    if reply.outcome is ActivationOutcome.ACTIVATED:
        return Activated()
    name, status, detail = _ACTIVATION_PROBLEMS[reply.outcome]
    return problem(
        name, status, detail, outcome=reply.outcome.value, attempts_left=reply.attempts_left
    )


async def resend_response(
    registrations: RegistrationClient, email: str, requested_by: str, request_id: str | None
) -> Any:
    try:
        reply = await registrations.resend(email, requested_by, request_id=request_id)
    except UnknownRegistration:
        reply = ResendReply(outcome=ResendOutcome.NOT_PENDING, resends_left=0)
    if reply.outcome is ResendOutcome.SENT:
        return ResendSent(resends_left=reply.resends_left, next_resend_at=reply.next_resend_at)
    if reply.outcome is ResendOutcome.THROTTLED:
        wait = 1
        if reply.next_resend_at is not None:
            wait = max(1, math.ceil((reply.next_resend_at - datetime.now(UTC)).total_seconds()))
        return problem(
            "resend-throttled",
            429,
            f"a code was sent a moment ago: the next one can be sent in {wait} s",
            headers={"Retry-After": str(wait)},
            outcome=reply.outcome.value,
            retry_after=wait,
        )
    if reply.outcome is ResendOutcome.LIMIT_REACHED:
        return problem(
            "resend-limit-reached",
            409,
            "no resends left for this registration",
            outcome=reply.outcome.value,
        )
    # The same answer for an unknown address and one whose registration ended.
    return problem("not-pending", 409, "nothing is pending for this address", outcome="not_pending")


_HTTP_PROBLEMS = {
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "body-too-large",
    415: "unsupported-media-type",
}


def _handle_errors(app: FastAPI) -> None:
    """Every error as a problem. Validation errors name the field and never echo the input
    (``input`` and ``ctx`` of pydantic's errors are dropped: they may hold a password)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> Response:
        return err.response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> Response:
        errors = [_field_error(error) for error in err.errors()]
        first = errors[0] if errors else FieldError(field="body", detail="invalid")
        return problem(
            "invalid-input",
            400,
            f"{first.field}: {first.detail}",
            field=first.field,
            errors=[error.model_dump() for error in errors],
        )

    @app.exception_handler(InvalidInput)
    async def invalid_input(request: Request, err: InvalidInput) -> Response:
        detail = str(err).removeprefix(f"{err.field}: ")
        return problem(
            "invalid-input",
            400,
            str(err),
            field=err.field,
            errors=[{"field": err.field, "detail": detail}],
        )

    @app.exception_handler(Busy)
    async def busy(request: Request, err: Busy) -> Response:
        return problem(
            "busy", 503, "too many calls for this registration at once: retry in a moment",
            headers={"Retry-After": "1"}, retry_after=1,
        )  # fmt: skip

    @app.exception_handler(ServerUnreachable)
    @app.exception_handler(NoWorkerAnswered)
    async def unavailable(request: Request, err: Exception) -> Response:
        log.warning("%s %s: %s", request.method, request.url.path, err)
        return problem(
            "unavailable", 503, "the registration service is not available: retry in a moment",
            headers={"Retry-After": "5"}, retry_after=5,
        )  # fmt: skip

    @app.exception_handler(StorageError)
    async def no_counts(request: Request, err: StorageError) -> Response:
        log.warning("the rate limits' storage failed: %s", err.storage_error)
        return problem(
            "unavailable", 503, "the registration service is not available: retry in a moment",
            headers={"Retry-After": "5"}, retry_after=5,
        )  # fmt: skip

    @app.exception_handler(SealKeyMismatch)
    @app.exception_handler(KeyConfigError)
    @app.exception_handler(InvalidSettings)
    async def misconfigured(request: Request, err: Exception) -> Response:
        log.error("configuration error: %s", err)
        return problem("internal", 500, "the service is misconfigured; its log says how")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        name = _HTTP_PROBLEMS.get(err.status_code, "invalid-input")
        return problem(name, err.status_code, str(err.detail), headers=dict(err.headers or {}))

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> Response:
        # The traceback is logged (by Starlette's server error middleware); the body is not.
        return problem("internal", 500, "internal error")


def _field_error(error: Any) -> FieldError:
    location = [str(part) for part in error.get("loc", ())]
    if location and location[0] in ("body", "query", "path", "header"):
        source, location = location[0], location[1:]
    else:
        source = "body"
    field = ".".join(location) or source
    if source == "header":
        field = field.title()
    return FieldError(field=field, detail=str(error.get("msg", "invalid")))


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the problem schema, without its default 422 validation error
    (this API answers invalid input with a 400 problem)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path in schema["paths"].values():
        for operation in path.values():
            responses = operation.get("responses", {})
            default = responses.get("422", {}).get("content", {}).get("application/json", {})
            if "HTTPValidationError" in str(default):
                del responses["422"]
            if "requestBody" in operation or operation.get("parameters"):
                responses.setdefault("400", documented(400)[400])
    app.openapi_schema = schema
    return schema


class BodyLimit:
    """Refuses a body over ``max_bytes`` with 413, by its ``Content-Length`` or, when chunked,
    as soon as more has arrived: a large body is never read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = problem(
            "body-too-large", 413, f"the body is larger than {self.max_bytes} bytes"
        )
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await too_large(scope, receive, send)
                    return
        received = 0
        over = False

        async def counted() -> Message:
            # Past the limit the body ends there for the app, whose answer is replaced by 413:
            # an exception would be taken by FastAPI for a body it could not parse.
            nonlocal received, over
            if over:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def sending(message: Message) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await too_large(scope, receive, send)

        await self.app(scope, counted, sending)


class AccessLog:
    """One line per request: the client, method, path (never the query string, which carries a
    link's token) and status. Uvicorn's own access log is off: it logs the query string."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            access_log.info(
                '%s "%s %s" %d',
                client[0] if client else "-",
                scope["method"],
                scope["path"],
                status,
            )


MEDIA_TYPES = (MEDIA_TYPE, "application/json")
Endpoint = Callable[..., Awaitable[Any]]
__all__ = ["JSONResponse", "create_app"]
