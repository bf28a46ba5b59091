"""HTTP plumbing shared by the remote providers (Hantera now; Medusa, Emporix, Norce, Cloudentity).

One ``VendorHttp`` per vendor per worker owns the connection pool; ``ClientCredentialsToken``
caches an OAuth2 client-credentials token on it; ``Vendor`` says how that vendor's error answers
read. Every vendor then fails the same way:

* 400/404/409/412/422 (and any other 4xx but 408/429) are typed, non-retryable
  ``ProviderError``s: sending the same request again cannot help.
* 429, 408, 5xx, other statuses and transport failures are ``ProviderUnavailable``, retryable,
  carrying the server's ``Retry-After`` as ``next_retry_delay`` (Temporal waits that long before
  the next attempt instead of the policy's backoff).
* 401 (after one token refresh), 403 and an OAuth client-setup error are retryable too: they are
  our configuration, and fixing it should resume the pending work rather than fail it.

Before any of that reaches Temporal, ``VendorHttp.request`` retries a request that is safe to
repeat, briefly and in place (``Retries``): one 503 among the half-dozen requests of a step then
costs a tenth of a second instead of the whole step and an activity backoff. Safe to repeat are
GET, HEAD, OPTIONS, PUT and DELETE, and a POST the caller marks ``idempotent=True`` (a read such
as a graph query, a create keyed by an id the workflow chose, a send with an idempotency key).
Repeated are answers 408, 429 and 5xx and transport failures; at most ``Retries.tries`` tries,
waiting a full-jitter exponential backoff (``base_seconds``, doubling, at most ``cap_seconds``) or
the server's ``Retry-After``, and only while the wait ends within ``budget_seconds`` of the first
try: a longer ``Retry-After`` ends the retries at once and goes to Temporal as
``next_retry_delay``. Any other POST is sent again only when its connection could not even be
made (connect error or timeout, no pooled connection): the server never saw it. What is repeated
must be correct to repeat: a step whose first try was done but unanswered sees its own effect on
the second (a 404 on a repeated DELETE, a 412 on a repeated conditional PUT, a 409 on a repeated
create), and must read it as done; ``activities.providers.hantera`` says how each of its steps
does.

Secrets stay out of errors and logs, which end up in workflow history and log stores. Error
messages name the method and the URL *path* only, and quote the server's explanation through
``scrub`` with the client secret, the current tokens and each call's ``redact`` removed. The rule
for URLs: a secret never goes into one; where a vendor demands it in the query string (Norce's
password login), pass it as ``secret_params``, whose values are scrubbed as well. As a second
guard every URL the ``httpx`` logger logs loses its query string and user info (``_PublicUrls``),
and ``VendorHttp`` installs no event hooks that could see them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import quote, quote_plus

import httpx

from activities.errors import (
    ConcurrentModification,
    Conflict,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    scrub,
)

log = logging.getLogger(__name__)

RETRY_AFTER_MAX = timedelta(minutes=10)
"""The longest ``Retry-After`` honoured: a longer (or absurd) one would outlast the step."""
STATUS_ERRORS: Mapping[int, type[ProviderError]] = {
    404: NotFound,
    409: Conflict,
    412: ConcurrentModification,
}
"""Typed errors of 4xx statuses; any other 4xx but 408/429 is ``InvalidRequest``."""
CLIENT_SETUP_ERRORS = frozenset({"invalid_client", "unauthorized_client", "unsupported_grant_type"})
"""RFC 6749 section 5.2 token errors that mean our client is set up wrong (secret, grant types):
retryable like a 401, so fixing the client resumes the work instead of failing it."""
DEFAULT_TOKEN_LIFETIME = 300.0
"""Seconds a token is cached when the token answer has no ``expires_in`` (a 401 still renews)."""
TOKEN_REFRESH_FRACTION = 0.1
"""Refresh this fraction of a token's lifetime before it expires ..."""
TOKEN_REFRESH_MAX_SECONDS = 60.0
"""... but at most this many seconds early."""
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods retried in place without being marked ``idempotent`` (RFC 9110 section 9.2.2)."""


@dataclass(frozen=True)
class Retries:
    """How ``VendorHttp.request`` retries a transient failure of a request safe to repeat.

    The defaults keep a request's retrying within 3 s (plus the last try's own duration): a
    remote step of about eight requests stays well inside its 30 s start-to-close even if each
    one used its whole budget, and Temporal's retry takes over for anything longer.
    """

    tries: int = 3
    """Tries in all, the first one included (1: no retries)."""
    budget_seconds: float = 3.0
    """A retry is made only if its wait ends within this many seconds of the first try."""
    base_seconds: float = 0.1
    """The first retry waits up to this long (uniformly at random: full jitter), ..."""
    cap_seconds: float = 1.0
    """... each further one up to twice as long as the one before, at most this long."""

    def delay(self, tries: int, retry_after: timedelta | None, elapsed: float) -> float | None:
        """Seconds to wait after ``tries`` failed tries begun ``elapsed`` seconds ago, the last
        one answered with ``retry_after``; ``None``: no more tries."""
        if tries >= self.tries:
            return None
        if retry_after is not None:
            wait = retry_after.total_seconds()
        else:
            wait = _jitter.uniform(0.0, min(self.cap_seconds, self.base_seconds * 2 ** (tries - 1)))
        return wait if elapsed + wait <= self.budget_seconds else None


DEFAULT_RETRIES = Retries()
NO_RETRIES = Retries(tries=1)
_jitter = random.SystemRandom()
_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
"""Waits between tries (tests replace it)."""


def _transient(status: int) -> bool:
    """Statuses that a moment later may be answered otherwise."""
    return status in (408, 429) or 500 <= status < 600


# Reading a vendor's errors ---------------------------------------------------------------------


class Detail(NamedTuple):
    """A server's own explanation of an error: ``text`` for the message (scrubbed before use),
    ``code`` (machine-readable, if any) for picking a typed error."""

    text: str
    code: str | None


Describe = Callable[[httpx.Response], Detail]
Classify = Callable[[httpx.Response, Detail], type[ProviderError] | None]


def json_describer(text_keys: Sequence[str], code_keys: Sequence[str]) -> Describe:
    """A ``Describe`` for flat JSON error bodies: the text joins ``text_keys``' values, the code
    is the first string among ``code_keys``; a body that is not JSON is the text as is."""

    def describe(response: httpx.Response) -> Detail:
        try:
            body = response.json()
        except ValueError:
            return Detail(response.text, None)
        if not isinstance(body, dict):
            return Detail("", None)
        code = next((body[k] for k in code_keys if isinstance(body.get(k), str)), None)
        return Detail(" ".join(str(body[k]) for k in text_keys if body.get(k)), code)

    return describe


describe_json = json_describer(
    ("error", "code", "message", "error_description", "detail", "title"), ("error", "code")
)
"""Common keys: RFC 6749 token errors, RFC 9457 problem details, the usual code and message."""


def retry_after(value: str | None) -> timedelta | None:
    """``Retry-After`` as seconds or an HTTP date, at most ``RETRY_AFTER_MAX``; ``None`` if
    absent or unreadable (``nan``, ``inf``: a retry then uses the activity's own backoff)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    return timedelta(seconds=min(max(seconds, 0.0), RETRY_AFTER_MAX.total_seconds()))


def _oauth_error(response: httpx.Response) -> str | None:
    """The RFC 6749 ``error`` of a token endpoint's answer, whatever else the vendor sends."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None


@dataclass(frozen=True)
class Vendor:
    """How one vendor's answers map to errors; the extension point for the next vendors.

    ``describe`` reads its error bodies (``json_describer`` covers flat ones; nested ones such as
    a gateway's ``{"fault": {...}}`` need a function of their own). ``classify`` overrides the
    status mapping where the vendor's statuses mean something else (an answer it returns ``None``
    for maps by status). ``auth_hint`` is appended to errors that mean our credentials or grants
    are wrong: it should name the settings to check.
    """

    name: str
    auth_hint: str = ""
    describe: Describe = describe_json
    classify: Classify | None = None

    def error(
        self,
        response: httpx.Response,
        *,
        redact: Iterable[str] = (),
        typed: Mapping[str, type[ProviderError]] | None = None,
        setup_codes: Collection[str] = (),
    ) -> ProviderError | None:
        """The error for a non-2xx ``response`` (``None`` for 2xx).

        ``typed`` gives the server's error codes a 4xx error type of their own (a password
        policy's ``PasswordRejected``); any other code maps by status, so one we did not expect is
        never mistaken for one we did. ``setup_codes`` are OAuth errors that mean our client is
        misconfigured (``CLIENT_SETUP_ERRORS`` at a token endpoint): retryable like a 401.
        """
        status = response.status_code
        if 200 <= status < 300:
            return None
        request = response.request
        detail = self.describe(response)
        message = f"{self.name} {request.method} {request.url.path}: HTTP {status}"
        message = f"{message} {scrub(detail.text, redact)}".rstrip()
        error = self.classify(response, detail) if self.classify else None
        client_setup = bool(setup_codes) and _oauth_error(response) in setup_codes
        if error is None and (status in (401, 403) or client_setup):
            error, message = ProviderUnavailable, f"{message}{self.auth_hint}"
        if error is None and 400 <= status < 500 and status not in (408, 429):
            by_code = (typed or {}).get(detail.code or "")
            error = by_code or STATUS_ERRORS.get(status, InvalidRequest)
        # 408, 429, 5xx, and 1xx/3xx (e.g. a redirecting proxy in front of a wrong base URL).
        error = error or ProviderUnavailable
        if not error.retryable:
            return error(message)
        return error(message, next_retry_delay=retry_after(response.headers.get("Retry-After")))

    def json(self, response: httpx.Response) -> Any:
        """The answer's JSON; a 2xx answer that is not JSON is broken, retrying cannot help."""
        try:
            return response.json()
        except ValueError:
            path = response.request.url.path
            raise InvalidRequest(f"{self.name} {path}: the answer is not JSON") from None

    def json_object(self, response: httpx.Response) -> dict[str, Any]:
        """The answer's JSON object (``json``, and not a list or a scalar)."""
        body = self.json(response)
        if not isinstance(body, dict):
            path = response.request.url.path
            raise InvalidRequest(f"{self.name} {path}: the answer is not a JSON object")
        return body


# Keeping URLs out of logs ---------------------------------------------------------------------


class _PublicUrls(logging.Filter):
    """Strips query string, fragment and user info from the URLs that records of the ``httpx``
    logger carry (its ``HTTP Request: <method> <url>`` line at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_with(query=None, fragment=None, userinfo=b"")
                if isinstance(arg, httpx.URL)
                else arg
                for arg in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_PublicUrls())


class _NoAnswer(Exception):
    """A transport failure: ``error`` to raise; ``sent``: the request may have reached the
    server (anything but a connection that could not be made)."""

    def __init__(self, error: ProviderUnavailable, *, sent: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.sent = sent


_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport failures before the request left: a retry cannot repeat anything."""


def _encodings(value: str) -> tuple[str, ...]:
    """A query value as given and as URL-encoded, the forms a server may echo."""
    return (value, quote(value, safe=""), quote_plus(value))


# The client -----------------------------------------------------------------------------------


class VendorHttp:
    """One vendor's ``httpx.AsyncClient`` (base URL, timeouts, a pool of keep-alive connections),
    shared by all its roles for the worker's lifetime, and the one way to call that vendor."""

    def __init__(
        self,
        vendor: Vendor,
        base_url: str,
        *,
        timeout_seconds: float = 20.0,
        connect_timeout_seconds: float = 5.0,
        max_connections: int = 20,
        headers: Mapping[str, str] | None = None,
        retries: Retries = DEFAULT_RETRIES,
    ) -> None:
        self.vendor = vendor
        self.retries = retries
        self._secret_sources: list[Callable[[], Iterable[str]]] = []
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_seconds, connect=connect_timeout_seconds),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"Accept": "application/json", **(headers or {})},
        )

    def redact_always(self, source: Callable[[], Iterable[str]]) -> None:
        """Scrub what ``source`` returns (e.g. an API key, the current token) from every error;
        asked anew for each error, as tokens change."""
        self._secret_sources.append(source)

    def _redactions(self, redact: Sequence[str], token: str | None) -> tuple[str, ...]:
        """Everything an error of this call must not show."""
        always = (secret for source in self._secret_sources for secret in source())
        return (*always, *redact, token or "")

    @property
    def is_closed(self) -> bool:
        return self._client.is_closed

    async def aclose(self) -> None:
        """Close the pooled connections; idempotent."""
        await self._client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        auth: ClientCredentialsToken | str | None = None,
        allow: Collection[int] = (),
        redact: Sequence[str] = (),
        typed: Mapping[str, type[ProviderError]] | None = None,
        setup_codes: Collection[str] = (),
        secret_params: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request and map its status (``Vendor.error``); statuses in ``allow`` (e.g. 404
        for a lookup) are returned instead of raised.

        ``auth``: a cached client token, fetched anew once if the server answers 401, or a
        bearer token used as is (and scrubbed). ``url`` is relative to the base URL or absolute.
        ``secret_params`` are query parameters that must not be seen (module docstring);
        ``kwargs`` go to ``httpx`` (``json``, ``data``, ``params``, ``headers``).
        ``idempotent``: whether the request may be sent again after a transient failure
        (``Retries``); by default only for the methods in ``IDEMPOTENT_METHODS``.
        """
        if secret_params:
            kwargs["params"] = httpx.QueryParams(kwargs.get("params")).merge(secret_params)
            redact = (*redact, *(s for v in secret_params.values() for s in _encodings(v)))
        repeatable = method.upper() in IDEMPOTENT_METHODS if idempotent is None else idempotent
        started, tries = time.monotonic(), 0
        while True:
            tries += 1
            token: str | None = None
            try:
                token = await auth.get() if isinstance(auth, ClientCredentialsToken) else auth
                response = await self._send(method, url, token, redact, kwargs)
                if response.status_code == 401 and isinstance(auth, ClientCredentialsToken):
                    token = await auth.get(stale=token)
                    response = await self._send(method, url, token, redact, kwargs)
            except _NoAnswer as failure:
                error: ProviderError = failure.error
                again = repeatable or not failure.sent
            else:
                if response.status_code in allow:
                    return response
                mapped = self.vendor.error(
                    response,
                    redact=self._redactions(redact, token),
                    typed=typed,
                    setup_codes=setup_codes,
                )
                if mapped is None:
                    return response
                error = mapped
                again = repeatable and error.retryable and _transient(response.status_code)
            elapsed = time.monotonic() - started
            wait = self.retries.delay(tries, error.next_retry_delay, elapsed) if again else None
            if wait is None:
                raise error
            log.info("%s; try %d in %.2f s", error.message, tries + 1, wait)
            await _sleep(wait)

    async def _send(
        self,
        method: str,
        url: str,
        token: str | None,
        redact: Sequence[str],
        kwargs: Mapping[str, Any],
    ) -> httpx.Response:
        """One HTTP exchange; a transport failure (timeout, refused, dropped) is ``_NoAnswer``."""
        headers = dict(kwargs.get("headers") or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = self._client.build_request(method, url, **{**kwargs, "headers": headers})
        path = request.url.path
        try:
            response = await self._client.send(request)
        except httpx.RequestError as exc:
            reason = scrub(str(exc), self._redactions(redact, token)) or "no detail"
            error = ProviderUnavailable(
                f"{self.vendor.name} {method} {path}: {type(exc).__name__}: {reason}"
            )
            raise _NoAnswer(error, sent=not isinstance(exc, _UNSENT)) from None
        log.debug("%s %s %s -> %s", self.vendor.name, method, path, response.status_code)
        return response


class ClientCredentialsToken:
    """An OAuth2 client-credentials token (client id and secret form-encoded), cached until
    shortly before it expires and shared by every call to the vendor.

    Single flight: however many callers find the token missing, expiring or rejected at once,
    one token request is made and all of them wait for it (and share its failure).
    """

    def __init__(
        self,
        http: VendorHttp,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
    ) -> None:
        self._http = http
        self._url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._token: str | None = None
        self._expires = 0.0
        self._refresh: asyncio.Task[str] | None = None
        http.redact_always(lambda: (self._client_secret, self._token or ""))

    def __repr__(self) -> str:
        return f"ClientCredentialsToken({self._url!r}, client_id={self._client_id!r})"

    async def grant(
        self, form: Mapping[str, str], *, redact: Sequence[str] = ()
    ) -> tuple[str, float]:
        """POST ``form`` plus our client credentials to the token URL: the token and its
        lifetime in seconds. Also for other grants made with our client (a password grant)."""
        form = {**form, "client_id": self._client_id, "client_secret": self._client_secret}
        # Idempotent: a grant changes nothing (the token of a repeated one is as good).
        response = await self._http.request(
            "POST",
            self._url,
            data=form,
            redact=redact,
            setup_codes=CLIENT_SETUP_ERRORS,
            idempotent=True,
        )
        body = self._http.vendor.json_object(response)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token:
            path = response.request.url.path
            raise InvalidRequest(f"{self._http.vendor.name} {path}: the answer has no access_token")
        return token, DEFAULT_TOKEN_LIFETIME if lifetime is None else float(lifetime)

    async def get(self, *, stale: str | None = None) -> str:
        """The cached token, fetched anew if missing, expiring, or the ``stale`` one a server
        just rejected (unless another caller has replaced it meanwhile)."""
        if self._token and self._token != stale and time.monotonic() < self._expires:
            return self._token
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._fetch())
            # A refresh whose callers were all cancelled must not warn about its exception.
            self._refresh.add_done_callback(lambda task: task.cancelled() or task.exception())
        # Shielded: one cancelled caller does not cancel the refresh the others wait for.
        return await asyncio.shield(self._refresh)

    async def _fetch(self) -> str:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        token, lifetime = await self.grant(form)
        margin = min(TOKEN_REFRESH_MAX_SECONDS, lifetime * TOKEN_REFRESH_FRACTION)
        self._token, self._expires = token, time.monotonic() + lifetime - margin
        log.info("%s client token obtained, valid %.0f s", self._http.vendor.name, lifetime)
        return token
