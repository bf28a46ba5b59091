"""The shared HTTP plumbing (``activities.providers.http``) against a loopback server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from activities.errors import (
    ConcurrentModification,
    Conflict,
    InvalidRequest,
    NotFound,
    PasswordRejected,
    ProviderError,
    ProviderUnavailable,
)
from activities.providers import http as http_module
from activities.providers.http import (
    DEFAULT_RETRIES,
    NO_RETRIES,
    RETRY_AFTER_MAX,
    ClientCredentialsToken,
    Detail,
    Retries,
    Vendor,
    VendorHttp,
    json_describer,
    retry_after,
)
from tests.ports import free_port
from tests.simulators.loopback import cut_off, serve

CLIENT_ID = "svc"
CLIENT_SECRET = "s3cret/client+value"
PASSWORD = "pa ss&word=1"
HINT = " (check TEST_CLIENT_SECRET)"
TEST = Vendor("Test", auth_hint=HINT)
DROP = "drop"
"""A ``Flaky`` answer: handled, then the connection closed before the body."""


@dataclass
class Flaky:
    """An ASGI endpoint answering each request with the next of ``script`` (a status, a status
    and its ``Retry-After``, or ``DROP``), then 200; ``hits`` are the methods it was sent."""

    script: list[int | tuple[int, str] | str] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)
    on_hit: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.hits.append(scope["method"])
        if self.on_hit:
            self.on_hit()
        step = self.script.pop(0) if self.script else 200
        if step == DROP:
            await cut_off(send, scope["path"])
        status, after = step if isinstance(step, tuple) else (step, None)
        assert isinstance(status, int)
        headers = {"Retry-After": after} if after is not None else None
        await JSONResponse({"try": len(self.hits)}, status, headers=headers)(scope, receive, send)


@dataclass
class Server:
    """An OAuth2 token endpoint and a protected API that echo what they were sent, as careless
    servers do."""

    base_url: str = ""
    lifetime: float | None = 300.0
    token_outage: bool = False
    token_blips: int = 0
    """The next this many token requests are answered 503 (no ``Retry-After``)."""
    reject_all_tokens: bool = False
    answer: tuple[int, dict[str, str]] = (200, {})
    """Status and headers of ``/answer``."""
    tokens: list[str] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    token_forms: list[dict[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    """Of ``/data``, in order."""
    flaky: Flaky = field(default_factory=Flaky)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/flaky", self.flaky, methods=["GET", "HEAD", "PUT", "DELETE", "POST"]),
                Route("/oauth/token", self._token, methods=["POST"]),
                Route("/data", self._data),
                Route("/answer", self._answer),
                Route("/echo", self._echo),
                Route("/slow", self._slow),
                Route("/text", lambda _: PlainTextResponse("not json")),
                Route("/list", lambda _: JSONResponse([1])),
            ]
        )

    async def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        self.token_forms.append(form)
        await asyncio.sleep(0.05)  # long enough for concurrent callers to pile up
        if self.token_blips:
            self.token_blips -= 1
            return JSONResponse({"error": "unavailable"}, 503)
        if self.token_outage:
            return JSONResponse({"error": "unavailable"}, 503, headers={"Retry-After": "3"})
        if form.get("client_secret") != CLIENT_SECRET:
            description = f"wrong secret {form.get('client_secret')}"
            return JSONResponse({"error": "invalid_client", "error_description": description}, 401)
        if form.get("grant_type") == "password":
            description = f"bad password {form.get('password')}"
            return JSONResponse({"error": "invalid_grant", "error_description": description}, 400)
        token = f"tok-{len(self.tokens)}-Zq8"
        self.tokens.append(token)
        self.valid.add(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.lifetime is not None:
            body["expires_in"] = self.lifetime
        return JSONResponse(body)

    async def _data(self, request: Request) -> Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        status = 401 if self.reject_all_tokens or token not in self.valid else 200
        self.statuses.append(status)
        return JSONResponse({"error": "unauthorized", "message": f"token {token}"}, status)

    async def _answer(self, request: Request) -> Response:
        status, headers = self.answer
        body = {"error": "E", "message": f"for {request.headers.get('Authorization')}"}
        return JSONResponse(body, status, headers=headers)

    async def _echo(self, request: Request) -> Response:
        """400 quoting the query string, raw and decoded."""
        query = request.url.query
        return JSONResponse({"message": f"{query} {dict(request.query_params)}"}, 400)

    async def _slow(self, request: Request) -> Response:
        await asyncio.sleep(1.0)
        return JSONResponse({})

    def revoke(self) -> None:
        self.valid.clear()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    server = Server()
    async with serve(server.app()) as base_url:
        server.base_url = base_url
        yield server


@pytest.fixture
async def http(server: Server) -> AsyncIterator[VendorHttp]:
    client = VendorHttp(TEST, server.base_url, timeout_seconds=0.5)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def token(http: VendorHttp) -> ClientCredentialsToken:
    return ClientCredentialsToken(http, "/oauth/token", CLIENT_ID, CLIENT_SECRET, scope="api")


class Clock:
    """Stands in for ``time`` in the module under test, so expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clock = Clock()
    monkeypatch.setattr(http_module, "time", clock)
    yield clock


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between tries, recorded instead of waited (a ``clock`` moves on by them)."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock = getattr(http_module, "time")  # noqa: B009 - the module's, maybe a ``Clock``
        if isinstance(clock, Clock):
            clock.now += seconds
        await asyncio.sleep(0)

    monkeypatch.setattr(http_module, "_sleep", sleep)
    return waits


# Token cache ----------------------------------------------------------------------------------


async def test_a_hundred_concurrent_calls_make_one_token_request(
    http: VendorHttp, token: ClientCredentialsToken, server: Server
) -> None:
    await asyncio.gather(*(http.request("GET", "/data", auth=token) for _ in range(100)))
    await http.request("GET", "/data", auth=token)

    assert len(server.token_forms) == 1
    assert server.token_forms[0] == {
        "grant_type": "client_credentials",
        "scope": "api",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert server.statuses == [200] * 101


async def test_a_failed_token_request_is_shared_not_repeated_by_each_caller(
    http: VendorHttp, token: ClientCredentialsToken, server: Server
) -> None:
    server.token_outage = True
    results = await asyncio.gather(
        *(http.request("GET", "/data", auth=token) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, ProviderUnavailable) for r in results)
    assert len(server.token_forms) == 1
    first = results[0]
    assert isinstance(first, ProviderUnavailable)
    assert first.next_retry_delay == timedelta(seconds=3)

    server.token_outage = False  # the next caller tries again
    await http.request("GET", "/data", auth=token)
    assert len(server.token_forms) == 2


async def test_a_cancelled_caller_does_not_cancel_the_refresh_others_wait_for(
    http: VendorHttp, token: ClientCredentialsToken, server: Server
) -> None:
    first = asyncio.create_task(token.get())
    second = asyncio.create_task(token.get())
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == server.tokens[0]
    assert len(server.token_forms) == 1


@pytest.mark.parametrize(
    ("lifetime", "refresh_after"),
    [(300.0, 270.0), (3600.0, 3540.0), (None, 270.0)],
    ids=["10% early", "at most 60 s early", "no expires_in: 300 s"],
)
async def test_the_token_is_refreshed_shortly_before_it_expires(
    http: VendorHttp,
    token: ClientCredentialsToken,
    server: Server,
    clock: Clock,
    lifetime: float | None,
    refresh_after: float,
) -> None:
    server.lifetime = lifetime
    first = await token.get()
    clock.now += refresh_after - 1
    assert await token.get() == first
    clock.now += 2
    assert await token.get() != first
    assert len(server.token_forms) == 2


async def test_a_rejected_token_is_refreshed_once_for_all_its_callers(
    http: VendorHttp, token: ClientCredentialsToken, server: Server
) -> None:
    await http.request("GET", "/data", auth=token)
    server.revoke()

    await asyncio.gather(*(http.request("GET", "/data", auth=token) for _ in range(10)))

    assert len(server.token_forms) == 2
    assert server.statuses.count(401) == 10 and server.statuses.count(200) == 11


async def test_a_second_401_is_a_retryable_error_naming_the_settings(
    http: VendorHttp, token: ClientCredentialsToken, server: Server
) -> None:
    server.reject_all_tokens = True
    with pytest.raises(ProviderUnavailable) as err:
        await http.request("GET", "/data", auth=token)
    assert not err.value.non_retryable
    assert err.value.message == f"Test GET /data: HTTP 401 unauthorized token ***{HINT}"
    assert len(server.token_forms) == 2
    assert server.statuses == [401, 401]


async def test_a_bearer_token_is_used_as_is_and_scrubbed(http: VendorHttp, server: Server) -> None:
    with pytest.raises(ProviderUnavailable) as err:
        await http.request("GET", "/data", auth="user-token-Xy7")
    assert "user-token-Xy7" not in str(err.value)
    assert server.statuses == [401] and server.token_forms == []


async def test_client_setup_errors_at_the_token_endpoint_are_retryable(
    server: Server, http: VendorHttp
) -> None:
    wrong = ClientCredentialsToken(http, "/oauth/token", CLIENT_ID, "wrong-secret-Qv3")
    with pytest.raises(ProviderUnavailable) as err:
        await wrong.get()
    assert not err.value.non_retryable
    assert err.value.message == (
        f"Test POST /oauth/token: HTTP 401 invalid_client wrong secret ***{HINT}"
    )


async def test_other_token_errors_map_by_status(token: ClientCredentialsToken) -> None:
    """A refused password grant is the user's fault, not our client's."""
    form = {"grant_type": "password", "username": "u@x.test", "password": PASSWORD}
    with pytest.raises(InvalidRequest) as err:
        await token.grant(form, redact=(PASSWORD,))
    assert err.value.non_retryable
    assert err.value.message == "Test POST /oauth/token: HTTP 400 invalid_grant bad password ***"


# Status mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, InvalidRequest),
        (404, NotFound),
        (409, Conflict),
        (412, ConcurrentModification),
        (422, InvalidRequest),
        (410, InvalidRequest),
        (403, ProviderUnavailable),
        (408, ProviderUnavailable),
        (429, ProviderUnavailable),
        (500, ProviderUnavailable),
        (502, ProviderUnavailable),
        (503, ProviderUnavailable),
        (304, ProviderUnavailable),
    ],
)
async def test_each_status_maps_to_its_typed_error(
    http: VendorHttp, server: Server, status: int, error: type[ProviderError]
) -> None:
    server.answer = (status, {})
    with pytest.raises(ProviderError) as err:
        await http.request("GET", "/answer", auth="tok-Jw2")
    assert type(err.value) is error
    assert err.value.non_retryable is not error.retryable
    assert err.value.type == error.__name__
    assert err.value.message.startswith(f"Test GET /answer: HTTP {status}")


async def test_an_allowed_status_is_returned(http: VendorHttp, server: Server) -> None:
    server.answer = (404, {})
    assert (await http.request("GET", "/answer", allow=(404,))).status_code == 404


async def test_typed_codes_pick_a_4xx_error_and_nothing_else(
    http: VendorHttp, server: Server
) -> None:
    typed = {"E": PasswordRejected}
    server.answer = (422, {})
    with pytest.raises(PasswordRejected):
        await http.request("GET", "/answer", typed=typed)
    server.answer = (503, {})
    with pytest.raises(ProviderUnavailable):
        await http.request("GET", "/answer", typed=typed)


async def test_a_vendor_reads_its_own_error_bodies_and_status_meanings(server: Server) -> None:
    """E.g. a vendor answering validation errors with 500 and a message."""

    def classify(response: httpx.Response, detail: Detail) -> type[ProviderError] | None:
        return InvalidRequest if response.status_code == 500 and detail.code == "E" else None

    vendor = Vendor("Shop", describe=json_describer(("message",), ("error",)), classify=classify)
    shop = VendorHttp(vendor, server.base_url)
    try:
        server.answer = (500, {})
        with pytest.raises(InvalidRequest) as err:
            await shop.request("GET", "/answer")
        assert err.value.message == "Shop GET /answer: HTTP 500 for None"
        server.answer = (502, {})
        with pytest.raises(ProviderUnavailable):
            await shop.request("GET", "/answer")
    finally:
        await shop.aclose()


async def test_a_2xx_answer_that_is_not_json_is_invalid(http: VendorHttp) -> None:
    response = await http.request("GET", "/text")
    with pytest.raises(InvalidRequest, match="Test /text: the answer is not JSON"):
        TEST.json(response)
    with pytest.raises(InvalidRequest, match="not a JSON object"):
        TEST.json_object(await http.request("GET", "/list"))


# Retry-After and transport failures -----------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_becomes_the_next_retry_delay(
    http: VendorHttp, server: Server, status: int
) -> None:
    server.answer = (status, {"Retry-After": "7"})
    with pytest.raises(ProviderUnavailable) as err:
        await http.request("GET", "/answer")
    assert err.value.next_retry_delay == timedelta(seconds=7)

    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(minutes=1), usegmt=True)
    server.answer = (status, {"Retry-After": in_a_minute})
    with pytest.raises(ProviderUnavailable) as err:
        await http.request("GET", "/answer")
    delay = err.value.next_retry_delay
    assert delay is not None and timedelta(seconds=55) < delay <= timedelta(minutes=1)

    server.answer = (status, {})
    with pytest.raises(ProviderUnavailable) as err:
        await http.request("GET", "/answer")
    assert err.value.next_retry_delay is None


def test_retry_after_as_seconds_or_http_date() -> None:
    assert retry_after("3") == timedelta(seconds=3)
    assert retry_after("-5") == timedelta(0)
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == timedelta(0)  # in the past
    assert retry_after("later, maybe") is None
    assert retry_after(None) is None
    for absurd in ("nan", "inf", "-inf"):
        assert retry_after(absurd) is None
    assert retry_after("1e20") == RETRY_AFTER_MAX


async def test_a_refused_connection_is_retryable() -> None:
    port = free_port()  # nothing listens there
    closed = VendorHttp(TEST, f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ProviderUnavailable, match=r": Test GET /x: ConnectError") as err:
            await closed.request("GET", "/x")
    finally:
        await closed.aclose()
    assert not err.value.non_retryable and err.value.next_retry_delay is None


async def test_a_timeout_is_retryable(http: VendorHttp) -> None:
    with pytest.raises(ProviderUnavailable, match=r": Test GET /slow: ReadTimeout") as err:
        await http.request("GET", "/slow")
    assert not err.value.non_retryable


# Retries in place -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
async def test_a_request_safe_to_repeat_is_retried_through_transient_answers(
    http: VendorHttp, server: Server, sleeps: list[float], method: str
) -> None:
    server.flaky.script = [503, 429, 200]
    response = await http.request(method, "/flaky")
    assert response.status_code == 200
    assert server.flaky.hits == [method] * 3
    # Full jitter: the first wait up to 0.1 s, the second up to 0.2 s.
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.1 and 0 <= sleeps[1] <= 0.2


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_tries_are_bounded_and_the_last_error_is_raised(
    http: VendorHttp, server: Server, sleeps: list[float], status: int
) -> None:
    server.flaky.script = [status] * 5
    with pytest.raises(ProviderUnavailable, match=f"HTTP {status}") as err:
        await http.request("GET", "/flaky")
    assert not err.value.non_retryable
    assert len(server.flaky.hits) == DEFAULT_RETRIES.tries == 3 and len(sleeps) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 422])
async def test_other_errors_are_not_retried(
    http: VendorHttp, server: Server, sleeps: list[float], status: int
) -> None:
    server.flaky.script = [status, 200]
    with pytest.raises(ProviderError):
        await http.request("GET", "/flaky", auth="tok-Jw2")
    assert server.flaky.hits == ["GET"] and sleeps == []


def test_backoff_is_full_jitter_doubling_up_to_the_cap() -> None:
    policy = Retries(tries=6, budget_seconds=100.0, base_seconds=0.1, cap_seconds=0.5)
    for tries, bound in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        waits = [policy.delay(tries, None, 0.0) for _ in range(200)]
        assert all(w is not None and 0.0 <= w <= bound for w in waits)
        spread = [w for w in waits if w is not None]
        assert max(spread) > bound * 0.8 and min(spread) < bound * 0.2  # spread, not fixed
    assert policy.delay(6, None, 0.0) is None  # tries used up
    assert NO_RETRIES.delay(1, None, 0.0) is None


def test_a_wait_that_would_end_past_the_budget_is_not_made() -> None:
    policy = Retries(tries=5, budget_seconds=3.0)
    assert policy.delay(1, timedelta(seconds=2), 0.5) == 2.0
    assert policy.delay(1, timedelta(seconds=2), 1.5) is None
    assert policy.delay(1, None, 3.0) is None
    assert policy.delay(1, timedelta(0), 2.9) == 0.0


async def test_retry_after_within_the_budget_is_waited(
    http: VendorHttp, server: Server, sleeps: list[float]
) -> None:
    server.flaky.script = [(429, "1"), (503, "0"), 200]
    assert (await http.request("GET", "/flaky")).status_code == 200
    assert sleeps == [1.0, 0.0] and len(server.flaky.hits) == 3


async def test_retry_after_beyond_the_budget_goes_to_temporal_at_once(
    http: VendorHttp, server: Server, sleeps: list[float]
) -> None:
    server.flaky.script = [(429, "1"), (503, "7"), 200]
    with pytest.raises(ProviderUnavailable, match="HTTP 503") as err:
        await http.request("GET", "/flaky")
    assert err.value.next_retry_delay == timedelta(seconds=7)
    assert sleeps == [1.0] and len(server.flaky.hits) == 2


async def test_retries_end_with_the_time_budget(
    server: Server, clock: Clock, sleeps: list[float]
) -> None:
    """Tries that take long use the budget up: no wait may end past it."""
    policy = Retries(tries=10, budget_seconds=1.0, base_seconds=0.1, cap_seconds=0.1)
    http = VendorHttp(TEST, server.base_url, retries=policy)

    def slow_try() -> None:
        clock.now += 0.55

    server.flaky.on_hit = slow_try
    server.flaky.script = [503] * 10
    try:
        with pytest.raises(ProviderUnavailable):
            await http.request("GET", "/flaky")
    finally:
        await http.aclose()
    # 0.55 + a wait of at most 0.1 <= 1.0: a second try; after it 1.1 s have passed: no third.
    assert len(server.flaky.hits) == 2 and len(sleeps) == 1


async def test_a_post_is_not_retried_unless_marked_idempotent(
    http: VendorHttp, server: Server, sleeps: list[float]
) -> None:
    server.flaky.script = [503, 200]
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        await http.request("POST", "/flaky", json={})
    assert server.flaky.hits == ["POST"] and sleeps == []

    server.flaky.script = [503, DROP, 200]
    assert (await http.request("POST", "/flaky", json={}, idempotent=True)).status_code == 200
    assert server.flaky.hits == ["POST"] * 4 and len(sleeps) == 2


async def test_marked_not_idempotent_a_put_is_not_retried(
    http: VendorHttp, server: Server, sleeps: list[float]
) -> None:
    server.flaky.script = [503, 200]
    with pytest.raises(ProviderUnavailable):
        await http.request("PUT", "/flaky", json={}, idempotent=False)
    assert server.flaky.hits == ["PUT"] and sleeps == []


async def test_a_dropped_answer_is_retried_only_when_safe(
    http: VendorHttp, server: Server, sleeps: list[float]
) -> None:
    server.flaky.script = [DROP, 200]
    assert (await http.request("GET", "/flaky")).status_code == 200
    assert server.flaky.hits == ["GET", "GET"]

    server.flaky.script = [DROP, 200]
    with pytest.raises(ProviderUnavailable, match="RemoteProtocolError"):
        await http.request("POST", "/flaky", json={})
    assert server.flaky.hits == ["GET", "GET", "POST"]  # sent once: it may have been done


async def test_a_post_whose_connection_could_not_be_made_is_retried(
    sleeps: list[float],
) -> None:
    """A refused connection never reached the server: even a POST is safe to send again."""
    port = free_port()
    closed = VendorHttp(TEST, f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ProviderUnavailable, match="ConnectError"):
            await closed.request("POST", "/x", json={})
    finally:
        await closed.aclose()
    assert len(sleeps) == 2


async def test_a_timed_out_try_past_the_budget_is_not_repeated(
    server: Server, sleeps: list[float]
) -> None:
    http = VendorHttp(
        TEST, server.base_url, timeout_seconds=0.3, retries=Retries(budget_seconds=0.2)
    )
    try:
        with pytest.raises(ProviderUnavailable, match="ReadTimeout"):
            await http.request("GET", "/slow")
    finally:
        await http.aclose()
    assert sleeps == []


async def test_a_token_request_is_retried_in_place(
    http: VendorHttp, token: ClientCredentialsToken, server: Server, sleeps: list[float]
) -> None:
    server.token_blips = 2
    await http.request("GET", "/data", auth=token)
    assert len(server.token_forms) == 3 and len(sleeps) == 2
    assert server.statuses == [200]


async def test_each_retry_is_logged_without_secrets(
    http: VendorHttp,
    token: ClientCredentialsToken,
    server: Server,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=http_module.__name__)
    server.flaky.script = [502]
    await http.request("GET", "/flaky", auth=token)
    assert server.flaky.hits == ["GET", "GET"]
    (logged,) = [
        r.getMessage()
        for r in caplog.records
        if r.name == http_module.__name__ and "try" in r.getMessage()
    ]
    assert logged.startswith("Test GET /flaky: HTTP 502") and "try 2 in" in logged
    assert server.tokens[0] not in logged


# Secrets --------------------------------------------------------------------------------------


async def test_secrets_stay_out_of_errors_logs_and_reprs(
    http: VendorHttp,
    token: ClientCredentialsToken,
    server: Server,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client secret, the tokens and a password the vendor wants in the query string."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    errors: list[str] = []
    await http.request("GET", "/data", auth=token)
    server.answer = (400, {})
    params = {"user": "u1"}
    for path in ("/echo", "/answer", "/slow"):
        with pytest.raises(ProviderError) as err:
            await http.request(
                "GET", path, auth=token, params=params, secret_params={"password": PASSWORD}
            )
        errors.append(str(err.value))
    wrong = ClientCredentialsToken(http, "/oauth/token", CLIENT_ID, "wrong-secret-Qv3")
    with pytest.raises(ProviderError) as err:
        await wrong.get()
    errors.append(str(err.value))

    assert (
        "Test GET /echo: HTTP 400 user=u1&password=*** {'user': 'u1', 'password': '***'}"
        in (errors[0])
    )
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"HTTP Request: GET {server.base_url}/echo " in logged  # without its query
    assert "httpcore" in {r.name.split(".")[0] for r in caplog.records}
    secrets = (CLIENT_SECRET, "wrong-secret-Qv3", PASSWORD, *server.tokens)
    encoded = (quote(CLIENT_SECRET, safe=""), quote(PASSWORD, safe=""), "pa+ss")
    for text in (*errors, logged, repr(token), repr(http)):
        for secret in (*secrets, *encoded):
            assert secret not in text
