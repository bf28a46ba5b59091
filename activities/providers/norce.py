"""Norce Commerce as the identity and customers provider, or as the customers provider only.

Norce keeps a login as the ``Account`` of a ``Customer``: one record (``one_record=True``). It
has no hard delete: compensation inactivates (``login_undo=DEACTIVATE``), and Norce culls
inactive customers itself after ``CullCustomerDayCount`` days. Our own activation codes.

Sources (Norce's public docs, read through the project's search tool; cited by page):

* Customers and login guide, docs.norce.io/developer-portal/app-development/
  working-with-customers-and-the-login-process (seed 003): the Customer JSON (``/Date(ms+zone)/``
  timestamps), "RegisterCustomer3" with a Customer and an Account, no password-strength check,
  ``LoginPost``, ``GetCustomerByEmail``/``ByCode``/``ByLoginName`` return the customer "if it
  exists and is not disabled", ``UpdateCustomer3`` with a password, unique emails per client or
  application, and, with another identity provider, "look up the correct customer in Norce
  after the login ... Use the email address or CustomerCode".
* Accessing APIs with OAuth2 accounts, docs.norce.io/api-reference/
  accessing-apis-with-oauth2-accounts: ``{base}/identity/1.0/connect/token``, client credentials
  in the body, ``scope`` = playground/stage/prod, a 3600 s JWT; "Max 3 requests per minute per
  IP address, with a possibility to burst 20 more", 429 beyond. So one cached token per worker
  (``ClientCredentialsToken``: single flight, renewed 60 s before expiry), never one per call.
* Calling Norce services, docs.norce.io/developer-portal/app-development/calling-norce-services:
  ``{base}/commerce/[service]/[version]``.
* CustomerService 1.1 reference, docs.norce.io/api-reference/services/customerservice/...:
  ``CreateCustomer3?password=&doSendMail=&createdBy=`` ("Customers can be created with or
  without an Account"; the password only hashed), ``UpdateCustomer3?updatedBy=`` (also takes
  ``password`` per the guide), ``GetCustomer?id=``, ``GetCustomerByCode?code=``,
  ``GetCustomerByEmail?email=`` ("Returns null if the Customer doesn't exist"),
  ``UpdateAccountStatus?customerId=&isActive=&updatedBy=`` ("Accounts can be activated/
  deactivated", answers the Customer), ``ActivateCustomer``/``InactivateCustomer?customerId=&
  inactivatedBy=`` ("The user account associated with this customer will no longer be able to
  login. Inactivated Customers can be activated again if activated before X days, where X is
  the value set for ClientSetting CullCustomerDayCount"), ``LoginPost`` ({LoginName,
  Password}; 400 ``LoginFailed``), and statuses 200 and 500 only for the rest; ``Code`` is "the
  external code. Usually the id in the erp system. MaxLength: 50".

How the registration maps onto that:

* Every customer this service creates carries a deterministic ``Code``: ``REG-`` and the id the
  workflow chose (a UUID: no personal data, 40 characters). ``GetCustomerByCode`` finds it
  whatever happened to an earlier attempt, so creates are idempotent and get/activate/undo know
  their record; the prefix also tells our customers from imported ones (``undo_customer`` never
  inactivates another).
* Sign-up (``create_principal``): our code's customer if an earlier attempt made it; else the
  email's customer: one *without* an Account (imported) is bound, ``UpdateCustomer3`` adding an
  inactive Account and the password, and says ``linked_existing_customer``; one with an Account
  is ``AccountExists``; else ``CreateCustomer3`` with an inactive Account. The customer itself
  is created *active*: Norce's lookups hide an inactive customer, and ours must stay findable.
* Activation: ``UpdateAccountStatus(isActive=true)``. The login needs an active account on an
  active customer (InactivateCustomer's docs: an inactive customer's account cannot log in);
  our customer is active from the start, so ``ActivateCustomer`` (which reactivates an
  inactivated one, data lost after culling) is never needed.
* Undo (compensation): our customer: the account inactive, then ``InactivateCustomer`` (the
  record stays until Norce culls it). A bound imported customer: only the login goes: the
  account inactive and its password replaced by a random one; the customer stays as it was.
* Customers only (identity elsewhere): ``GetCustomerByEmail`` (linked, or ours by code), then
  ``GetCustomerByCode`` (an earlier attempt's), then ``CreateCustomer3`` without an Account;
  ``undo_customer`` inactivates only customers carrying our code prefix.

The password travels in CreateCustomer3/UpdateCustomer3's query string, so it goes as
``secret_params`` (``activities.providers.http``): error messages name the path only, replies
are scrubbed of it (raw and URL-encoded), and the ``httpx`` logger's URLs lose their query.

ASSUMPTIONS, each isolated below in one named constant or function: the application header
(``APPLICATION_HEADER``), the business-error document and its keys (``_classify``,
``DUPLICATE_EMAIL``, ``NOT_FOUND``, ``INVALID``), that an Account can be created inactive
(``IsActive: false`` in the body) and that inactive customers still hold their email
(``create_principal``'s ``AccountExists``), and the in-process binding ledger
(``NorceClient.bindings``).

A login bound to an imported customer cannot be found by our id (the customer's ``Code`` is
the importer's), so ``create_principal`` answers it with an id of its own, ``bound_id``, which
names the customer: the workflow uses the id a create answered for everything after it
(activation, the code, the undo), so those need no memory. What still does is recognising a
binding this worker made when the create itself is retried after a lost answer, or when
``find_principal`` judges an inactive bound login replaceable: the ledger, kept in process
(after a restart such a retry is answered as an account that exists, and such a login is not
replaced).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from activities.errors import (
    AccountExists,
    ConcurrentModification,
    Conflict,
    InvalidRequest,
    NotFound,
    ProviderError,
)
from activities.providers.http import (
    ClientCredentialsToken,
    Detail,
    Vendor,
    VendorHttp,
    json_describer,
)
from activities.providers.settings import VendorSettings, load_vendor_settings
from activities.providers.spec import ProviderSpec, Resources
from activities.roles import (
    Customer,
    CustomerLink,
    IdentityCapabilities,
    LoginUndo,
    NewCustomer,
    NewPrincipal,
    Principal,
)

log = logging.getLogger(__name__)

ENV_PREFIX = "REGISTRATION_NORCE_"
TOKEN_PATH = "/identity/1.0/connect/token"  # noqa: S105 (a path, not a secret)
SERVICE = "/commerce/customer/1.1/"
CODE_PREFIX = "REG-"
"""Codes of the customers this service creates: ``REG-<workflow-chosen id>``."""
CODE_MAX = 50

# ASSUMPTIONS ----------------------------------------------------------------------------------

APPLICATION_HEADER = "application-id"
"""ASSUMPTION: the header that names the Norce application on every service call (the docs'
request samples omit headers); ``REGISTRATION_NORCE_APPLICATION_ID`` is sent in it."""
DUPLICATE_EMAIL = re.compile(r"(e-?mail|login ?name).*(exist|unique|duplicate|taken|in use)", re.I)
"""ASSUMPTION: how a business error names a taken email or login name (Norce documents no
codes for CreateCustomer3's "listed Exceptions"); matched against the key and the message."""
NOT_FOUND = re.compile(r"(not found|does not exist|doesn't exist|NotFound)", re.I)
INVALID = re.compile(
    r"(required|invalid|validation|max ?length|too long|LoginFailed|AccountCustomerMissing)",
    re.I,
)
"""ASSUMPTION: words of a validation error (and the documented LoginPost keys)."""
TRANSIENT = re.compile(r"(timeout|timed out|deadlock|unavailable|try again)", re.I)
_describe = json_describer(
    ("Message", "message", "ExceptionMessage", "error_description"),
    ("Key", "ErrorCode", "error", "code"),
)


def _classify(response: httpx.Response, detail: Detail) -> type[ProviderError] | None:
    """ASSUMPTION: Norce documents only 200 and 500 (LoginPost also 400), and business errors
    come as one of those with a JSON error document (``Message``, and a ``Key``/``ErrorCode``).
    Such a document is read for a duplicate, a missing record, a validation error; any other
    business error (a document with a message) is ``InvalidRequest``: non-retryable, so it is
    never retried forever. A 500 without a document (a proxy's page, an empty body) or whose
    message says transient stays ``ProviderUnavailable``, retried."""
    if response.status_code not in (400, 500) or not response.request.url.path.startswith(SERVICE):
        return None  # the token endpoint answers RFC 6749 errors: the shared mapping reads them
    text = f"{detail.code or ''} {detail.text}"
    if not detail.text.strip() and not detail.code:
        return None
    try:
        response.json()
    except ValueError:
        return None  # not a Norce error document: a real server or gateway failure
    if TRANSIENT.search(text):
        return None
    if DUPLICATE_EMAIL.search(text):
        return Conflict
    if NOT_FOUND.search(text):
        return NotFound
    return InvalidRequest


NORCE = Vendor(
    "Norce",
    auth_hint=f" (check {ENV_PREFIX}CLIENT_ID/CLIENT_SECRET/SCOPE/APPLICATION_ID and the"
    " integration user's applications and environments in Norce Admin)",
    describe=_describe,
    classify=_classify,
)


# Settings -------------------------------------------------------------------------------------


class NorceSettings(VendorSettings):
    """``REGISTRATION_NORCE_*``; the required ones are checked when the client is built.
    ``base_url`` is the host root, e.g. https://<client>.api-se.playground.norce.tech (paths are
    appended)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    base_url_example: ClassVar[str] = "https://<client>.api-se.norce.tech"
    base_url_host_root: ClassVar[bool] = True

    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None
    """The environment: playground, stage or prod."""
    application_id: str | None = None
    by_account_id: int = Field(1, ge=1)
    """The account id sent as ``createdBy``/``updatedBy``/``inactivatedBy``: set the integration
    account's own id (InactivateCustomer asks not to use the default, 1)."""


# Records --------------------------------------------------------------------------------------

_DOTNET_DATE = re.compile(r"^/Date\((-?\d+)(?:([+-])(\d{2})(\d{2}))?\)/$")


def parse_date(value: Any) -> datetime | None:
    """A Norce timestamp: WCF's ``/Date(ms+zone)/`` (the guide's JSON) or ISO 8601 (the API
    reference's samples); ``None`` if absent or unreadable."""
    if not isinstance(value, str):
        return None
    match = _DOTNET_DATE.match(value)
    if match:
        millis, sign, hours, minutes = match.groups()
        zone = UTC
        if sign:
            offset = timedelta(hours=int(hours), minutes=int(minutes))
            zone = timezone(offset if sign == "+" else -offset)
        return datetime.fromtimestamp(int(millis) / 1000, UTC).astimezone(zone)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def code_for(record_id: str) -> str:
    """The deterministic ``Code`` of the customer made for a workflow-chosen id."""
    code = f"{CODE_PREFIX}{record_id}"
    if len(code) > CODE_MAX or not re.fullmatch(r"[A-Za-z0-9-]+", record_id):
        raise InvalidRequest("a registration id does not fit a Norce customer Code")
    return code


BOUND_PREFIX = "norce-bound-"


def bound_id(customer_id: int, record_id: str) -> str:
    """The principal id of a login bound to imported customer ``customer_id``."""
    return f"{BOUND_PREFIX}{customer_id}-{record_id}"


def _bound_customer(principal_id: str) -> int | None:
    """The imported customer a ``bound_id`` names, else ``None``."""
    if not principal_id.startswith(BOUND_PREFIX):
        return None
    number, _, _ = principal_id.removeprefix(BOUND_PREFIX).partition("-")
    return int(number) if number.isdigit() else None


def _record_id(principal_id: str) -> str:
    """The workflow-chosen id in a ``bound_id`` (the id itself for any other)."""
    if _bound_customer(principal_id) is None:
        return principal_id
    return principal_id.removeprefix(BOUND_PREFIX).partition("-")[2]


def _ours(doc: Mapping[str, Any]) -> str | None:
    """The workflow id in the ``Code`` of a customer this service created, else ``None``."""
    code = doc.get("Code")
    if isinstance(code, str) and code.startswith(CODE_PREFIX):
        return code.removeprefix(CODE_PREFIX)
    return None


def _names(full: str) -> tuple[str, str | None]:
    """FirstName and LastName (50 characters each) of a display name."""
    first, _, last = full.strip().rpartition(" ")
    if not first:
        return full.strip()[:50], None
    return first[:50], last[:50]


def _display_name(doc: Mapping[str, Any]) -> str:
    return " ".join(str(doc[k]) for k in ("FirstName", "LastName") if doc.get(k))


def _version(doc: Mapping[str, Any]) -> str:
    """A concurrency token: Norce has no etag, so the account's state and the last update."""
    account = doc.get("Account") or {}
    updated = parse_date(doc.get("Updated")) or parse_date(doc.get("Created"))
    stamp = updated.isoformat() if updated else "-"
    return f"{account.get('Id')}:{bool(account.get('IsActive'))}:{stamp}"


@dataclass
class Binding:
    """An imported customer a registration bound its login to (``NorceClient.bindings``)."""

    customer_id: int
    undone: bool = False


# Client ---------------------------------------------------------------------------------------


class NorceClient:
    """The connection pool and the one token of the worker; hands out the role objects."""

    def __init__(self, settings: NorceSettings) -> None:
        self.settings = settings
        base_url = settings.required("base_url")
        client_id = settings.required("client_id")
        client_secret = settings.required("client_secret")
        scope = settings.required("scope")
        application_id = settings.required("application_id")
        self._http = VendorHttp(
            NORCE,
            base_url,
            headers={APPLICATION_HEADER: application_id},
            **settings.http_options(),
        )
        self.token = ClientCredentialsToken(
            self._http, TOKEN_PATH, client_id, client_secret, scope=scope
        )
        self.by = str(settings.by_account_id)
        self.bindings: dict[str, Binding] = {}
        """ASSUMPTION (a gap in the seam, see the module docstring): the imported customers
        this worker bound a login to, by the workflow's principal id. Norce can find such a
        customer by its email but not by our id (its ``Code`` is the importer's), and
        ``get_principal``/``activate_principal``/``undo_principal`` get only our id. Kept in
        process: after a worker restart a pending bound registration's activation fails
        (``NotFound``) and its undo cannot find the login (left inactive, unusable)."""
        self.identity = NorceIdentity(self)
        self.customers = NorceCustomers(self)

    @classmethod
    def from_env(cls) -> NorceClient:
        return cls(load_vendor_settings(NorceSettings))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        operation: str,
        *,
        params: Mapping[str, str] | None = None,
        secret_params: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        return await self._http.request(
            method,
            SERVICE + operation,
            auth=self.token,
            params=dict(params or {}),
            secret_params=secret_params,
            idempotent=idempotent,
            **kwargs,
        )

    async def customer(self, operation: str, **params: str) -> dict[str, Any] | None:
        """A ``GetCustomer*`` lookup: the Customer, or ``None`` (Norce answers null for a
        missing or inactive one)."""
        response = await self.call("GET", operation, params=params)
        if not response.content.strip() or response.content.strip() == b"null":
            return None
        body = NORCE.json(response)
        if body is None:
            return None
        if not isinstance(body, dict) or "Id" not in body:
            raise InvalidRequest(f"Norce {operation}: the answer is not a Customer")
        return body

    async def by_code(self, code: str) -> dict[str, Any] | None:
        return await self.customer("GetCustomerByCode", code=code)

    async def by_email(self, email: str) -> dict[str, Any] | None:
        return await self.customer("GetCustomerByEmail", email=email)

    async def by_id(self, customer_id: int) -> dict[str, Any] | None:
        return await self.customer("GetCustomer", id=str(customer_id))

    async def create(self, body: dict[str, Any], password: str | None) -> dict[str, Any]:
        """``CreateCustomer3``: not repeated in place (a repeat could create twice); a retried
        activity finds an earlier attempt's customer by its code first."""
        params = {"doSendMail": "false", "createdBy": self.by}
        response = await self.call(
            "POST",
            "CreateCustomer3",
            params=params,
            secret_params={"password": password} if password is not None else None,
            json=body,
        )
        return NORCE.json_object(response)

    async def update(self, body: dict[str, Any], password: str) -> dict[str, Any]:
        """``UpdateCustomer3`` with a new password: a full update, safe to repeat."""
        response = await self.call(
            "POST",
            "UpdateCustomer3",
            params={"updatedBy": self.by},
            secret_params={"password": password},
            json=body,
            idempotent=True,
        )
        return NORCE.json_object(response)

    async def account_status(self, customer_id: int, active: bool) -> dict[str, Any]:
        response = await self.call(
            "POST",
            "UpdateAccountStatus",
            params={
                "customerId": str(customer_id),
                "isActive": "true" if active else "false",
                "updatedBy": self.by,
            },
            idempotent=True,
        )
        return NORCE.json_object(response)

    async def inactivate(self, customer_id: int) -> None:
        await self.call(
            "POST",
            "InactivateCustomer",
            params={"customerId": str(customer_id), "inactivatedBy": self.by},
            idempotent=True,
        )


def _customer_id(doc: Mapping[str, Any]) -> int:
    value = doc.get("Id")
    if not isinstance(value, int):
        raise InvalidRequest("Norce: a Customer without an Id")
    return value


def _number(doc: Mapping[str, Any]) -> str:
    """The customer number we report: its ``Code`` (ours or the ERP's), else Norce's Id."""
    code = doc.get("Code")
    return str(code) if code else str(doc.get("Id"))


# Identity -------------------------------------------------------------------------------------


class NorceIdentity:
    """``IdentityProvider``: the login is the Account of a Customer (one record)."""

    in_process = False
    capabilities = IdentityCapabilities(one_record=True, login_undo=LoginUndo.DEACTIVATE)

    def __init__(self, client: NorceClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """The ``NorceClient`` owns the connections."""

    def _principal(self, doc: Mapping[str, Any], principal_id: str, *, linked: bool) -> Principal:
        account = doc.get("Account") or {}
        active = doc.get("IsActive") is True and account.get("IsActive") is True
        return Principal(
            id=principal_id,
            email=str(doc.get("Email") or account.get("LoginName") or ""),
            name=str(account.get("Name") or _display_name(doc)),
            active=active,
            version=_version(doc),
            customer_id=str(doc.get("Id")),
            customer_number=_number(doc),
            linked_existing_customer=linked,
            replaceable=not active and doc.get("IsActive") is True,
        )

    def _bound_id(self, customer_id: int) -> str | None:
        """The principal id a registration bound to this imported customer (this worker's)."""
        return next(
            (pid for pid, b in self._client.bindings.items() if b.customer_id == customer_id),
            None,
        )

    async def _record(self, principal_id: str) -> tuple[dict[str, Any] | None, bool]:
        """The login's customer (``None`` if none or inactive), and whether it was bound."""
        customer_id = _bound_customer(principal_id)
        if customer_id is not None:
            return await self._client.by_id(customer_id), True
        binding = self._client.bindings.get(principal_id)
        if binding is not None:
            return await self._client.by_id(binding.customer_id), True
        return await self._client.by_code(code_for(principal_id)), False

    async def find_principal(self, email_canonical: str) -> Principal | None:
        """The email's customer with an Account (one without is no login yet: ``create``
        binds it). Ours by code, or bound by this worker: replaceable while inactive; anyone
        else's is not."""
        doc = await self._client.by_email(email_canonical)
        if doc is None or not doc.get("Account"):
            return None
        mine = _ours(doc)
        if mine is not None:
            return self._principal(doc, mine, linked=False)
        customer_id = _customer_id(doc)
        bound = self._bound_id(customer_id)
        if bound is not None:
            return self._principal(doc, bound_id(customer_id, bound), linked=True)
        principal = self._principal(doc, f"norce-{doc.get('Id')}", linked=True)
        return principal.model_copy(update={"replaceable": False})

    async def get_principal(self, principal_id: str) -> Principal | None:
        doc, bound = await self._record(principal_id)
        if doc is None or not doc.get("Account"):
            return None
        binding = self._client.bindings.get(_record_id(principal_id))
        if bound and binding is not None and binding.undone:
            return None
        return self._principal(doc, principal_id, linked=bound)

    def _account(self, new: NewPrincipal) -> dict[str, Any]:
        return {"LoginName": new.email_canonical, "Name": new.name, "IsActive": False}

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        """The customer with an inactive Account: an earlier attempt's (by code), an imported
        account-less one bound, or a new one. See the module docstring."""
        earlier = await self.get_principal(new.id)
        if earlier is not None:
            if earlier.email.lower() != new.email_canonical:
                raise Conflict(f"principal {new.id} already exists with another email")
            return earlier
        code = code_for(new.id)
        existing = await self._client.by_email(new.email_canonical)
        if existing is not None:
            return await self._bind(new, password, existing)
        first, last = _names(new.customer.name if new.customer else new.name)
        body: dict[str, Any] = {
            "Code": code,
            "Email": new.email_canonical,
            "FirstName": first,
            "LastName": last,
            "IsActive": True,
            "Account": self._account(new),
        }
        if new.phone:
            body["Phone"] = new.phone[:50]
        try:
            created = await self._client.create(body, password)
        except Conflict:
            # ASSUMPTION: inactive customers keep their email, and no lookup shows them: an
            # account we cannot see (an earlier registration's inactivated record until Norce
            # culls it, or a disabled customer).
            raise AccountExists(
                f"Norce refused principal {new.id}: the email belongs to a customer no lookup"
                " shows (inactive)"
            ) from None
        return self._principal(created, new.id, linked=False)

    async def _bind(self, new: NewPrincipal, password: str, doc: dict[str, Any]) -> Principal:
        """Add the inactive Account (and the password) to the email's imported customer."""
        customer_id = _customer_id(doc)
        account = doc.get("Account")
        rebind = account and self._bound_id(customer_id) is not None and not account["IsActive"]
        if account and not rebind:
            raise AccountExists(f"Norce customer {customer_id} already has an account")
        if _ours(doc) is not None:
            raise AccountExists(f"Norce customer {customer_id} belongs to another registration")
        for stale in [p for p, b in self._client.bindings.items() if b.customer_id == customer_id]:
            del self._client.bindings[stale]
        self._client.bindings[new.id] = Binding(customer_id)
        body = {**doc, "Account": {**(account or {}), **self._account(new)}}
        try:
            updated = await self._client.update(body, password)
        except ProviderError as err:
            if err.non_retryable:
                del self._client.bindings[new.id]
            raise
        log.info("principal %s bound to imported Norce customer %s", new.id, customer_id)
        return self._principal(updated, bound_id(customer_id, new.id), linked=True)

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        """The create's first lookups (by code, then email); nothing is written."""
        await self._client.by_code(code_for(new.id))
        await self._client.by_email(new.email_canonical)

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        """``UpdateAccountStatus(isActive=true)`` if the record is still at
        ``expected_version`` (read, compared, written: Norce has no conditional write)."""
        if customer_id is not None or customer_number is not None:
            raise InvalidRequest(f"principal {principal_id}: Norce links its own customer")
        doc, bound = await self._record(principal_id)
        if doc is None or not doc.get("Account"):
            raise NotFound(f"principal {principal_id} does not exist at Norce")
        if _version(doc) != expected_version:
            raise ConcurrentModification(f"principal {principal_id} changed at Norce")
        updated = await self._client.account_status(_customer_id(doc), True)
        return self._principal(updated, principal_id, linked=bound)

    async def undo_principal(self, principal_id: str) -> bool:
        """Ours: account inactive, customer inactivated (left to Norce's culling). Bound to an
        imported customer: only the login goes (account inactive, a random password); the
        customer stays active and as it was. ``False`` if nothing (left) to undo."""
        doc, bound = await self._record(principal_id)
        if doc is None or not doc.get("Account"):
            return False
        customer_id = _customer_id(doc)
        if bound:
            binding = self._client.bindings.get(_record_id(principal_id))
            if binding is not None and binding.undone:
                return False
            if doc["Account"].get("IsActive"):
                await self._client.account_status(customer_id, False)
            await self._client.update(dict(doc), secrets.token_urlsafe(32))
            if binding is not None:
                binding.undone = True
            return True
        if doc["Account"].get("IsActive"):
            await self._client.account_status(customer_id, False)
        await self._client.inactivate(customer_id)
        return True


# Customers ------------------------------------------------------------------------------------


class NorceCustomers:
    """``CustomerProvider`` on Norce customers without an Account (identity elsewhere). With
    Norce as the identity too the workflow makes no customers-role call (one record)."""

    in_process = False

    def __init__(self, client: NorceClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """The ``NorceClient`` owns the connections."""

    @staticmethod
    def _customer(doc: Mapping[str, Any], email: str) -> Customer:
        return Customer(
            id=str(doc.get("Id")),
            number=_number(doc),
            email=str(doc.get("Email") or email),
            name=_display_name(doc) or None,
        )

    async def find_customer(self, email_canonical: str) -> Customer | None:
        """The email's customer as Norce's lookup shows it (not an inactivated one)."""
        doc = await self._client.by_email(email_canonical)
        return None if doc is None else self._customer(doc, email_canonical)

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        """By email (ours if it carries this registration's code), by code (an earlier
        attempt's, e.g. not yet visible by email), else ``CreateCustomer3`` without an
        Account."""
        code = code_for(new.id)
        doc = await self._client.by_email(new.email_canonical)
        if doc is not None:
            return CustomerLink(
                customer=self._customer(doc, new.email_canonical), created=doc.get("Code") == code
            )
        doc = await self._client.by_code(code)
        if doc is not None:
            if str(doc.get("Email") or "").lower() != new.email_canonical:
                raise Conflict(f"Norce customer {doc.get('Id')} of {new.id} has another email")
            return CustomerLink(customer=self._customer(doc, new.email_canonical), created=True)
        first, last = _names(new.name)
        body: dict[str, Any] = {
            "Code": code,
            "Email": new.email_canonical,
            "FirstName": first,
            "LastName": last,
            "IsActive": True,
        }
        if new.phone:
            body["Phone"] = new.phone[:50]
        try:
            created = await self._client.create(body, None)
        except Conflict:
            raise AccountExists(
                f"Norce refused customer {new.id}: the email belongs to a customer no lookup"
                " shows (inactive)"
            ) from None
        return CustomerLink(customer=self._customer(created, new.email_canonical), created=True)

    async def undo_customer(self, customer_id: str) -> bool:
        """Inactivate a customer this service created: by the workflow's id (its code) or by
        Norce's Id, and only one carrying our code prefix (never an imported one)."""
        if customer_id.isdigit():
            doc = await self._client.by_id(int(customer_id))
        else:
            doc = await self._client.by_code(code_for(customer_id))
        if doc is None:
            return False
        if _ours(doc) is None:
            log.warning("Norce customer %s was not created by a registration: kept", customer_id)
            return False
        await self._client.inactivate(_customer_id(doc))
        return True


def _client(resources: Resources) -> NorceClient:
    """One client (connection pool, token cache) for both roles."""
    return resources.shared("norce", NorceClient.from_env)


SPEC = ProviderSpec(
    name="norce",
    identity=lambda resources: _client(resources).identity,
    customers=lambda resources: _client(resources).customers,
    capabilities=NorceIdentity.capabilities,
    env_prefix=ENV_PREFIX,
    listable_leftovers=False,
)
