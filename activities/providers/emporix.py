"""Emporix as the identity and customers provider: the login and the customer are one record.

Follows Emporix's customer-managed tutorial (``../shared/seeds/002``) and its OpenAPI contracts
(customer-managed, tenant-managed and OAuth service; ``docs/providers/emporix.md``):

* Sign-up is ``POST /customer/{tenant}/signup`` (``POST-customer-create-customer-account``)
  with an anonymous storefront token (``GET-oauth-generate-anonymous-access-token``): login
  (email, password) and profile (``customerDetails``) in one customer record, created
  *inactive* ("requires an action on the employee's side").
* The registration is that employee: with a service token (client credentials,
  ``POST-oauth-request-client-credentials``, scopes ``customer.customer_read
  customer.customer_manage``) activation is ``PATCH /customer/{tenant}/customers/{number}``
  ``{active: true, onHold: false}`` (``PATCH-customer-tenant-update-customer``) with the
  record's ``metadata.version`` where it has one; lookups are ``GET /customer/{tenant}/customers
  ?q=...&expand=accounts`` (``GET-customer-tenant-list-customers``); compensation is ``DELETE
  /customer/{tenant}/customers/{number}`` (``DELETE-customer-tenant-remove-customer``: 202, done
  asynchronously; 404 counts as done).

Our ids. Sign-up takes no id of ours, so ``create_principal`` records the workflow's principal id
(and the creating workflow's id) in the record's ``registration`` mixin (``customerDetails.mixins``,
which the signup schema allows) and every later call finds the record by it
(``q=mixins.registration.principalId:"<id>"``). The Principal's ``id`` is that principal id;
``customer_id``/``customer_number`` are the record's ``id`` and ``customerNumber``; its ``version``
is ``metadata.version`` (``""`` for a record without one).

Retries. A retried sign-up (an answer lost after Emporix created the record) meets 409
``conflict_resource`` (the account email is unique per tenant); it then looks for the record by
our mark and continues with it. A record for the email that does not carry this registration's
mark is never taken over: the sign-up raises ``AccountExists``. The search must show the record
when the retry runs (ASSUMPTION: Emporix's list is read-after-write; a record the search does not
show yet would be answered as someone else's account). ``VendorHttp`` repeats reads, the PATCH and
the DELETE in place after a transient failure, never the sign-up POST.

An imported customer (created by an employee through the tenant API, or imported). Neither
contract offers a way to give an existing record a password with a service token: the tenant
``PUT``/``PATCH`` bodies (``CustomerUpdateBySellerDto``, ``CustomerPatchBySellerDto``) have no
password, ``POST-customer-tenant-create-customer`` and ``POST-customer-tenant-import-customers``
only create (the latter with a precomputed hash), and assigning an account to a profile
(``/customer/{tenant}/me/accounts/internal``, the tutorial) needs the customer's own token. So an
email with a record is an account: found by the lookup, it is answered as one (active, or
inactive and not ours: ``replaceable=False``); not found but refused by the sign-up (409), it is
``AccountExists``. Either way the owner is mailed the notice that points to the password reset
(``REGISTRATION_PASSWORD_RESET_URL``: the storefront's page for Emporix's
``POST-customer-request-reset-password``), and no second record is made.

Errors: the services' ``{status, type, message, details[]}`` and the gateway's ``{fault:
{faultstring, detail: {errorcode}}}`` (``_describe``). A 401 gets one new token, then fails
retryably with a hint; a 403 (a missing scope) is a retryable configuration error naming the
scope the endpoint needs; 409 conflict, 404 not found, 429/5xx/transport retryable. Tokens,
passwords, the client secret and the storefront client id never appear in errors or logs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from temporalio import activity

from activities.errors import (
    AccountExists,
    ConcurrentModification,
    Conflict,
    InvalidRequest,
    NotFound,
    PasswordRejected,
    ProviderError,
    ProviderUnavailable,
    scrub,
)
from activities.providers.http import (
    TOKEN_REFRESH_FRACTION,
    TOKEN_REFRESH_MAX_SECONDS,
    ClientCredentialsToken,
    Detail,
    Vendor,
    VendorHttp,
)
from activities.providers.settings import VendorSettings, load_vendor_settings
from activities.providers.spec import ProviderSpec, Resources
from activities.roles import (
    CustomerLink,
    IdentityCapabilities,
    LoginCreated,
    LoginUndo,
    NewCustomer,
    NewPrincipal,
    Principal,
)

log = logging.getLogger(__name__)

ENV_PREFIX = "REGISTRATION_EMPORIX_"
TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path)
ANONYMOUS_LOGIN_PATH = "/customerlogin/auth/anonymous/login"
READ_SCOPE = "customer.customer_read"
MANAGE_SCOPE = "customer.customer_manage"
SERVICE_SCOPES = (READ_SCOPE, MANAGE_SCOPE)
"""What the service client needs: lookups read, activation and deletion manage."""
MIXIN = "registration"
"""The mixin carrying our mark: ``{principalId, workflowId, profile}``."""
CONFLICT_TYPE = "conflict_resource"
"""The documented ``type`` of a 409 for an email that already has an account."""
TENANT_PATTERN = re.compile(r"^[a-z][a-z0-9]+$")
"""The contracts' tenant parameter (3 to 16 characters)."""
_UNSAFE_IN_QUERY = frozenset('"\\')


def _describe(response: httpx.Response) -> Detail:
    """Emporix's two error bodies: the services' ``{status, type, message, details[]}`` and the
    API gateway's ``{fault: {faultstring, detail: {errorcode}}}`` (401s)."""
    try:
        body = response.json()
    except ValueError:
        return Detail(response.text, None)
    if not isinstance(body, dict):
        return Detail("", None)
    fault = body.get("fault")
    if isinstance(fault, dict):
        detail = fault.get("detail")
        code = detail.get("errorcode") if isinstance(detail, dict) else None
        text = str(fault.get("faultstring") or "")
        return Detail(f"{text} ({code})" if code else text, code if isinstance(code, str) else None)
    parts = [str(body["message"])] if body.get("message") else []
    for item in body.get("details") or []:
        if isinstance(item, dict) and item.get("message"):
            field = f"{item['field']}: " if item.get("field") else ""
            parts.append(f"{field}{item['message']}")
    kind = body.get("type")
    return Detail(" ".join(parts), kind if isinstance(kind, str) else None)


EMPORIX = Vendor(
    "Emporix",
    auth_hint=f" (check {ENV_PREFIX}CLIENT_ID/CLIENT_SECRET/TENANT and the service client's"
    f" scopes {' '.join(SERVICE_SCOPES)}: docs/providers/emporix.md)",
    describe=_describe,
)


class EmporixSettings(VendorSettings):
    """``REGISTRATION_EMPORIX_*``. Tenant and the three credentials are checked when the client
    is built."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    base_url_example: ClassVar[str] = "https://api.emporix.io"

    base_url: str = "https://api.emporix.io"
    tenant: str | None = None
    storefront_client_id: SecretStr | None = None
    """The storefront client's id (the "API key" of the anonymous token)."""
    client_id: str | None = None
    """The service client (client credentials) with ``SERVICE_SCOPES``."""
    client_secret: SecretStr | None = None
    mixin_schema_url: str | None = None
    """Sent as ``metadata.mixins.registration`` where the tenant validates mixins against a
    schema (docs/providers/emporix.md); unset: the mixin goes without a schema URL."""

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, tenant: str | None) -> str | None:
        if tenant is not None and not (TENANT_PATTERN.fullmatch(tenant) and 3 <= len(tenant) <= 16):
            raise ValueError("must be the lowercase tenant name (3 to 16 of a-z, 0-9)")
        return tenant


def query_literal(value: str) -> str:
    """``value`` as a double-quoted string of Emporix's ``q`` syntax, refusing what could leave
    the quotes (no escape sequence is documented, so none is guessed)."""
    if any(ch in _UNSAFE_IN_QUERY or unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidRequest(
            "value cannot be used in an Emporix query: it contains a double quote, a backslash"
            " or a control character"
        )
    return f'"{value}"'


# Tokens ---------------------------------------------------------------------------------------


class AnonymousToken:
    """The storefront's anonymous token (1 h), for the sign-up; cached and fetched anew shortly
    before it expires or when the server rejects it. A new anonymous login, not the refresh
    endpoint: the session it opens is of no use to a server-side sign-up."""

    def __init__(self, http: VendorHttp, tenant: str, client_id: str) -> None:
        self._http = http
        self._tenant = tenant
        self._client_id = client_id
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        http.redact_always(lambda: (self._client_id, self._token or ""))

    def __repr__(self) -> str:
        return f"AnonymousToken(tenant={self._tenant!r})"

    async def get(self, *, stale: str | None = None) -> str:
        async with self._lock:
            if self._token and self._token != stale and time.monotonic() < self._expires:
                return self._token
            response = await self._http.request(
                "GET",
                ANONYMOUS_LOGIN_PATH,
                params={"tenant": self._tenant},
                secret_params={"client_id": self._client_id},
            )
            body = EMPORIX.json_object(response)
            token, lifetime = body.get("access_token"), body.get("expires_in")
            if not isinstance(token, str) or not token:
                raise InvalidRequest(f"Emporix {ANONYMOUS_LOGIN_PATH}: the answer has no token")
            seconds = float(lifetime) if isinstance(lifetime, int | float) else 300.0
            margin = min(TOKEN_REFRESH_MAX_SECONDS, seconds * TOKEN_REFRESH_FRACTION)
            self._token, self._expires = token, time.monotonic() + seconds - margin
            log.info("Emporix anonymous token obtained, valid %.0f s", seconds)
            return token


# Client ---------------------------------------------------------------------------------------


class EmporixClient:
    """Owns the connection pool and both tokens; hands out the two role objects."""

    def __init__(self, settings: EmporixSettings) -> None:
        self.settings = settings
        self.tenant = settings.required("tenant")
        storefront_id = settings.required("storefront_client_id")
        client_id = settings.required("client_id")
        client_secret = settings.required("client_secret")
        self._http = VendorHttp(EMPORIX, settings.base_url, **settings.http_options())
        self._service = ClientCredentialsToken(
            self._http,
            TOKEN_PATH,
            client_id,
            client_secret,
            scope=f"tenant={self.tenant} {' '.join(SERVICE_SCOPES)}",
        )
        self._anonymous = AnonymousToken(self._http, self.tenant, storefront_id)
        self.identity = EmporixIdentity(self)
        self.customers = EmporixCustomers(self)

    @classmethod
    def from_env(cls) -> EmporixClient:
        return cls(load_vendor_settings(EmporixSettings))

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def customers_path(self) -> str:
        return f"/customer/{self.tenant}/customers"

    def customer_path(self, number: str) -> str:
        """Quoted so a number can never climb out of its resource (``../``)."""
        quoted = quote(number, safe="")
        if quoted in (".", ".."):
            quoted = quoted.replace(".", "%2E")
        return f"{self.customers_path}/{quoted}"

    async def service(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        allow: Collection[int] = (),
        typed: Mapping[str, type[ProviderError]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A request with the service token (a 401 gets one new token); a 403 names ``scope``,
        the scope the endpoint needs."""
        response = await self._http.request(
            method, path, auth=self._service, allow=(*allow, 403), typed=typed, **kwargs
        )
        if response.status_code == 403 and 403 not in allow:
            raise _forbidden(response, f"the service client ({ENV_PREFIX}CLIENT_ID) lacks {scope}")
        return response

    async def anonymous_token(self) -> str:
        return await self._anonymous.get()

    async def anonymous(
        self,
        method: str,
        path: str,
        *,
        allow: Collection[int] = (),
        redact: Sequence[str] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        """A request with the anonymous token; a 401 gets one new token, then fails."""
        token = await self._anonymous.get()
        response = await self._http.request(
            method, path, auth=token, allow=(*allow, 401, 403), redact=redact, **kwargs
        )
        if response.status_code == 401 and 401 not in allow:
            token = await self._anonymous.get(stale=token)
            response = await self._http.request(
                method, path, auth=token, allow=(*allow, 403), redact=redact, **kwargs
            )
        if response.status_code == 403 and 403 not in allow:
            raise _forbidden(
                response,
                f"the storefront client ({ENV_PREFIX}STOREFRONT_CLIENT_ID) may not call it",
                redact,
            )
        return response


def _forbidden(
    response: httpx.Response, why: str, redact: Sequence[str] = ()
) -> ProviderUnavailable:
    """A 403: a configuration error (retryable, so fixing the client resumes the work)."""
    detail = scrub(_describe(response).text, redact)
    request = response.request
    return ProviderUnavailable(
        f"Emporix {request.method} {request.url.path}: HTTP 403 {detail}; {why}"
        f" (docs/providers/emporix.md)"
    )


# Records --------------------------------------------------------------------------------------


def _mark(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    mark = (doc.get("mixins") or {}).get(MIXIN)
    return mark if isinstance(mark, dict) else {}


def _emails(doc: Mapping[str, Any]) -> set[str]:
    """The record's contact email and account emails, lower-cased."""
    found = {str(doc.get("contactEmail") or "").lower()}
    found |= {
        str(account.get("id") or "").lower()
        for account in doc.get("accounts") or []
        if isinstance(account, dict)
    }
    return found - {""}


def _number(doc: Mapping[str, Any]) -> str:
    number = doc.get("customerNumber") or doc.get("id")
    if not number:
        raise InvalidRequest("Emporix customer record without customerNumber or id")
    return str(number)


def _principal(doc: Mapping[str, Any]) -> Principal:
    mark = _mark(doc)
    number = _number(doc)
    version = (doc.get("metadata") or {}).get("version")
    names = [str(doc.get(k)) for k in ("firstName", "middleName", "lastName") if doc.get(k)]
    accounts = [a for a in doc.get("accounts") or [] if isinstance(a, dict) and a.get("id")]
    active = doc.get("active") is True
    ours = isinstance(mark.get("principalId"), str) and bool(mark["principalId"])
    return Principal(
        id=str(mark["principalId"]) if ours else f"emporix-customer-{number}",
        email=str(doc.get("contactEmail") or (accounts[0]["id"] if accounts else "")),
        name=" ".join(names),
        active=active,
        version="" if version is None else str(version),
        customer_id=str(doc.get("id") or number),
        customer_number=number,
        replaceable=ours and not active,
    )


def split_name(name: str) -> tuple[str, str]:
    """First and last name: the last word is the last name."""
    words = name.split()
    if len(words) < 2:
        return "", name.strip()
    return " ".join(words[:-1]), words[-1]


def preferred_language(locale: str | None) -> str | None:
    """``en-US`` -> ``en_US`` (Emporix's form); ``None`` when unset."""
    return locale.replace("-", "_") if locale else None


def _password_rejected(response: httpx.Response) -> bool:
    """A 400 whose details name the password field (Emporix documents no code for its policy)."""
    try:
        body = response.json()
    except ValueError:
        return False
    details = body.get("details") if isinstance(body, dict) else None
    return any(
        isinstance(item, dict) and str(item.get("field") or "").endswith("password")
        for item in details or []
    )


# Identity -------------------------------------------------------------------------------------


class EmporixIdentity:
    """``IdentityProvider``: the customer record is the login (one record)."""

    in_process = False
    capabilities = IdentityCapabilities(
        login_created=LoginCreated.SIGNUP, one_record=True, login_undo=LoginUndo.DELETE
    )

    def __init__(self, client: EmporixClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """Nothing to do: the ``EmporixClient`` owns the connections."""

    async def _search(self, q: str) -> list[dict[str, Any]]:
        response = await self._client.service(
            "GET",
            self._client.customers_path,
            scope=READ_SCOPE,
            params={"q": q, "expand": "accounts,mixin:*", "pageSize": "100"},
        )
        body = EMPORIX.json(response)
        if not isinstance(body, list):
            raise InvalidRequest("Emporix customer list: the answer is not a list")
        return [doc for doc in body if isinstance(doc, dict)]

    async def _record(self, principal_id: str) -> dict[str, Any] | None:
        """The record our mark names, or ``None``."""
        docs = await self._search(f"mixins.{MIXIN}.principalId:{query_literal(principal_id)}")
        mine = [doc for doc in docs if _mark(doc).get("principalId") == principal_id]
        return mine[0] if mine else None

    async def find_principal(self, email_canonical: str) -> Principal | None:
        """The email's record, whatever its state: active before anything (an account), then one
        that is not ours (``replaceable=False``), then a registration's leftover. Results are
        re-checked against the contact and account emails."""
        docs = await self._search(f"contactEmail:{query_literal(email_canonical)}")
        matches = [_principal(doc) for doc in docs if email_canonical.lower() in _emails(doc)]
        if not matches:
            return None
        matches.sort(key=lambda p: (not p.active, p.replaceable))
        return matches[0]

    async def get_principal(self, principal_id: str) -> Principal | None:
        doc = await self._record(principal_id)
        return None if doc is None else _principal(doc)

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        """The sign-up: one inactive record with the login and the customer part, marked with
        ``new.id``; a retry finds it by the mark (module docstring)."""
        existing = await self._record(new.id)
        if existing is not None:
            return self._same_email(existing, new)
        first, last = split_name(new.customer.name if new.customer else new.name)
        mark: dict[str, Any] = {"principalId": new.id}
        if activity.in_activity():
            mark["workflowId"] = activity.info().workflow_id
        if new.customer is not None and new.customer.profile:
            mark["profile"] = dict(new.customer.profile)
        details: dict[str, Any] = {
            "firstName": first,
            "lastName": last,
            "contactEmail": new.email_canonical,
            "mixins": {MIXIN: mark},
        }
        phone = new.phone or (new.customer.phone if new.customer else None)
        language = preferred_language(new.locale)
        details.update(
            {k: v for k, v in (("contactPhone", phone), ("preferredLanguage", language)) if v}
        )
        if self._client.settings.mixin_schema_url:
            details["metadata"] = {"mixins": {MIXIN: self._client.settings.mixin_schema_url}}
        body = {"email": new.email_canonical, "password": password, "customerDetails": details}
        response = await self._client.anonymous(
            "POST",
            f"/customer/{self._client.tenant}/signup",
            json=body,
            allow=(400, 409),
            redact=(password,),
        )
        if response.status_code == 400:
            error = EMPORIX.error(response, redact=(password,))
            assert error is not None
            if _password_rejected(response):
                raise PasswordRejected(error.message)
            raise error
        if response.status_code == 409:
            mine = await self._record(new.id)
            if mine is None:
                raise AccountExists(
                    f"principal {new.id}: Emporix has an account for the email that is not this"
                    " registration's (signup answered 409)"
                )
            log.info("principal %s: the sign-up was done by an earlier try", new.id)
            return self._same_email(mine, new)
        created = await self._record(new.id)
        if created is None:
            raise ProviderUnavailable(
                f"principal {new.id}: Emporix created the record, the search does not show it yet"
            )
        return _principal(created)

    @staticmethod
    def _same_email(doc: Mapping[str, Any], new: NewPrincipal) -> Principal:
        if new.email_canonical not in _emails(doc):
            raise Conflict(f"principal {new.id} already exists with another email")
        return _principal(doc)

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        """What a create spends before its sign-up: the anonymous token and the lookup by mark.
        The sign-up itself (and Emporix's password hashing) cannot be mirrored without creating
        something, so a first mail to an email with an account may still go out a little
        sooner."""
        await self._client.anonymous_token()
        await self._record(new.id)

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        """PATCH ``{active: true, onHold: false}`` guarded by ``metadata.version``.

        A record whose version moved is ``ConcurrentModification`` (ASSUMPTION: Emporix answers
        a stale ``metadata.version`` with 409; either way the record is read again and an
        already active one of ours is the result, as after a repeat whose first try went
        through unanswered)."""
        if customer_id is not None or customer_number is not None:
            raise InvalidRequest(f"principal {principal_id}: one record links its own customer")
        doc = await self._record(principal_id)
        if doc is None:
            raise NotFound(f"principal {principal_id} no longer exists at Emporix")
        current = _principal(doc)
        if current.active:
            return current
        if current.version != expected_version:
            raise ConcurrentModification(
                f"principal {principal_id}: version {current.version}, expected {expected_version}"
            )
        patch: dict[str, Any] = {"active": True, "onHold": False}
        if current.version:
            patch["metadata"] = {"version": int(current.version)}
        number = current.customer_number or ""
        try:
            await self._client.service(
                "PATCH",
                self._client.customer_path(number),
                scope=MANAGE_SCOPE,
                json=patch,
                typed={"optimistic_lock": ConcurrentModification},
            )
        except Conflict:
            again = await self._record(principal_id)
            if again is None or not _principal(again).active:
                raise ConcurrentModification(
                    f"principal {principal_id}: the record changed during activation"
                ) from None
            return _principal(again)
        activated = await self._record(principal_id)
        if activated is None:
            raise NotFound(f"principal {principal_id} was deleted during activation")
        result = _principal(activated)
        if not result.active:
            raise ProviderUnavailable(
                f"principal {principal_id}: the accepted activation is not visible yet"
            )
        return result

    async def undo_principal(self, principal_id: str) -> bool:
        """DELETE the record our mark names (202: Emporix deletes it asynchronously); ``False``
        if there is none (404 too)."""
        doc = await self._record(principal_id)
        if doc is None:
            return False
        return await _delete(self._client, _number(doc))


async def _delete(client: EmporixClient, number: str) -> bool:
    response = await client.service(
        "DELETE", client.customer_path(number), scope=MANAGE_SCOPE, allow=(404,)
    )
    return response.status_code != 404


# Customers ------------------------------------------------------------------------------------


class EmporixCustomers:
    """The customers role: the same records. A one-record shape makes no customers-role call
    for linking (``link_or_create_customer`` refuses); ``undo_customer`` deletes a record a
    registration created (it carries our mark), never another."""

    in_process = False

    def __init__(self, client: EmporixClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """Nothing to do: the ``EmporixClient`` owns the connections."""

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        raise InvalidRequest("Emporix: one record, the customer part comes with the login")

    async def undo_customer(self, customer_id: str) -> bool:
        response = await self._client.service(
            "GET",
            self._client.customer_path(customer_id),
            scope=READ_SCOPE,
            params={"expand": "mixin:*"},
            allow=(404,),
        )
        if response.status_code == 404 or not _mark(EMPORIX.json_object(response)):
            return False
        return await _delete(self._client, customer_id)


def _email_rule(email_canonical: str) -> None:
    """Records are found with a ``q`` query on the email: an address that cannot be quoted in one
    is refused before anything is created."""
    try:
        query_literal(email_canonical)
    except InvalidRequest:
        raise ValueError(
            "cannot be used with the emporix provider (double quote, backslash or control"
            " character)"
        ) from None


def _client(resources: Resources) -> EmporixClient:
    return resources.shared("emporix", EmporixClient.from_env)


SPEC = ProviderSpec(
    name="emporix",
    identity=lambda resources: _client(resources).identity,
    customers=lambda resources: _client(resources).customers,
    capabilities=EmporixIdentity.capabilities,
    env_prefix=ENV_PREFIX,
    email_rule=_email_rule,
    listable_leftovers=False,
)
