"""Medusa v2 as the identity and customers provider (one HTTP client for both roles).

Follows Medusa's storefront registration guide (seed 001) and its Store and Admin APIs at
medusajs/medusa@59e6747800133e091d20c2c167f600981abc5c0d (``/work/shared/specs/medusa``). A
Medusa customer's login is an *auth identity* (``emailpass``, keyed by the email, shared by every
actor type: an admin user and a customer with one email have one login); the customer is bound to
it through the identity's ``app_metadata.customer_id``.

The shape (``IdentityCapabilities``): ``login_created=ACTIVATION``, ``one_record=True``,
``login_undo=DEACTIVATE``, ``code=OURS``.

* Medusa has no inactive login, and at this version no API deletes an auth identity. So nothing is
  created at Medusa before the email is proven: the sealed password stays in the workflow, and
  ``create_principal`` (step 5) registers the login and creates the customer bound to it:
  ``POST /auth/customer/emailpass/register`` -> registration JWT, then ``POST /store/customers``
  with that JWT as Bearer and the ``x-publishable-api-key`` header.
* The login and the customer come into being together, so they are one record for the workflow:
  ``Principal.id`` is the auth identity's id (read from the JWT), ``customer_id`` and
  ``customer_number`` are the customer's id (Medusa has no customer numbers).
* The undo (``undo_principal``) deletes the customer this registration created (``DELETE
  /admin/customers/{id}``: a soft delete that also unbinds the login) and leaves the login behind,
  unbound: it cannot be deleted at this version. Only a customer whose ``metadata`` carries this
  registration's principal id (``REGISTRATION_MARK``) is ever deleted, never a login.
* Sign-up's "already registered" lookup (``find_principal``) is ``GET
  /admin/customers?email=&has_account=true``: a customer with an account is an active login.
  A login without a customer (an admin user, a login an undone registration left) is not seen
  there; it is met at activation (below).

Seed 001's existing-identity rule, at activation. ``register`` answers ``401 "Identity with email
already exists"``: we log in (``POST /auth/customer/emailpass``) with the password the person
chose. It works and the login has no customer yet (the JWT's ``actor_id`` is empty): the customer
is created with that login token (an admin user becomes a customer too; the login is not changed).
It works and the login already has a customer: ``AccountExists`` (the registration ends
``already_registered``, the owner is mailed the notice with the reset pointer) unless that customer
carries this registration's mark (an earlier attempt of this step created it: it is the result).
The password does not match: ``AccountExists``, the login is not taken over.

Retries. ``register`` and ``POST /store/customers`` are not idempotent at Medusa, and
``VendorHttp`` does not repeat them after a transport failure once they were sent. A retried step
starts again: its ``register`` meets the login the first attempt created (``exists``), logs in
with the same password, and goes on from what the login token says. Within one attempt, a
``POST /store/customers`` whose answer was lost is sent once more with the same token; its ``422
duplicate_error`` means the first one went through, and the customer is read through a fresh login
token (bound to it by then). An expired token (401 from the auth middleware) is renewed by logging
in again. Never a second customer: Medusa refuses a second account customer per email (422), and
every path above reads the existing one instead.

The mark: ``POST /store/customers`` rejects ``metadata``, so right after the create an admin
update (``POST /admin/customers/{id}``) writes ``metadata`` = the registration's profile plus
``REGISTRATION_MARK``: this registration's principal id. A step that fails after the customer was
created (the mark refused, say) deletes that customer itself before it fails (the workflow's undo
could not find an unmarked one). A worker that dies between the create and the mark leaves an
unmarked customer that a retry cannot tell from one made elsewhere: the registration then ends
``already_registered`` and the person keeps a working account (made with their password). Said in
docs/providers/medusa.md.

The undo finds the customer by email. ASSUMPTION of the seam: ``undo_principal`` gets only the
workflow's principal id (a UUID Medusa never saw), and Medusa's admin list cannot filter on
``metadata``; the email is taken from the registration's workflow ID
(``common.identifiers``, ``REGISTRATION_WORKFLOW_ID_MODE=email``, the default). With hashed
workflow IDs the undo cannot find the customer and says so in the log (``_email_of_registration``);
the step's own clean-up above is then the only one. Reported for a seam change.

An imported guest customer (``has_account=false``): Medusa keeps guest and account customers apart
(unique on email *and* ``has_account``), and its store create (``validateCustomerAccountCreation``)
creates an account customer beside a guest without complaint; no API binds a login to an existing
customer. So a registration of a guest's email creates the account customer and leaves the guest
untouched: one customer with an account for the email, ``linked_existing_customer=False``.

Customers role alone (identity elsewhere): ``link_or_create_customer`` finds the email's customer
(``GET /admin/customers?email=``: an account customer first, else a guest) or creates one with
``POST /admin/customers`` (a guest, ``has_account=false``: no Medusa login), marked with the
registration's customer id; ``undo_customer`` deletes by Medusa id (read first: Medusa answers 200
to a delete of a missing id, and the undo must say ``False`` then).

Where the spec and Medusa's source at that commit disagree, the source wins:

* ``POST /store/customers`` rejects ``metadata`` (``StoreCreateCustomer`` has no such field; zod
  answers 400 "Unrecognized fields") although the spec lists it.
* The auth middleware's 401 answers ``{"message": "Unauthorized"}`` (JSON, no ``type``); the
  register and login routes' 401 is a ``MedusaError`` ``{type: "unauthorized", message}``.
* Admin secret API keys go as HTTP Basic ``<sk_...>:`` (empty password), not the spec's
  ``x-medusa-access-token``.
* ``POST /auth/customer/emailpass/register`` answers ``401`` (not 400/409) for an existing identity
  (``"Identity with email already exists"``), and for a body without a string email or password.
* Every create and delete answers 200, never 201. ``DELETE /admin/customers/{id}`` answers 200
  for an id that names no customer (a soft delete of nothing).
* ``validateCustomerAccountCreation`` answers 422 ``duplicate_error`` for an email that has an
  account customer; the route answers 400 ``invalid_data`` ("Request already authenticated as a
  customer.") for a token whose login already has a customer.

Emails go to Medusa canonical (lower-case): the login's ``entity_id`` and the customer's email.
Medusa compares both exactly, so a login made elsewhere with another spelling is another login.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Collection, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict
from temporalio import activity

from activities.errors import (
    AccountExists,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    scrub,
)
from activities.providers.http import Vendor, VendorHttp, json_describer
from activities.providers.settings import VendorSettings, load_vendor_settings
from activities.providers.spec import ProviderSpec, Resources
from activities.roles import (
    CodeOwner,
    Customer,
    CustomerLink,
    IdentityCapabilities,
    LoginCreated,
    LoginUndo,
    NewCustomer,
    NewPrincipal,
    Principal,
)
from common.identifiers import PREFIX as WORKFLOW_ID_PREFIX

log = logging.getLogger(__name__)

ENV_PREFIX = "REGISTRATION_MEDUSA_"
REGISTER_PATH = "/auth/customer/emailpass/register"
LOGIN_PATH = "/auth/customer/emailpass"
STORE_CUSTOMERS = "/store/customers"
ADMIN_CUSTOMERS = "/admin/customers"
PUBLISHABLE_KEY_HEADER = "x-publishable-api-key"
IDENTITY_EXISTS = "Identity with email already exists"
"""The emailpass provider's ``register`` error for an email that has a login (any actor type)."""
REGISTRATION_MARK = "registration_principal_id"
"""``metadata`` key of a customer a registration created as identity: its principal id."""
CUSTOMER_MARK = "registration_customer_id"
"""``metadata`` key of a customer the customers role created: the registration's customer id."""
CUSTOMER_FIELDS = "id,email,first_name,last_name,has_account,metadata,created_at,updated_at"
MEDUSA = Vendor(
    "Medusa",
    auth_hint=f" (check {ENV_PREFIX}SECRET_API_KEY and {ENV_PREFIX}PUBLISHABLE_KEY)",
    describe=json_describer(("message",), ("type",)),
)
"""Medusa's error bodies are ``{type, message}``; its statuses mean what the shared mapping says
(400 invalid_data/not_allowed, 401, 404 not_found, 409 conflict, 422 duplicate_error)."""


class MedusaSettings(VendorSettings):
    """``REGISTRATION_MEDUSA_*``; the required ones are checked when the client is built.
    ``base_url`` is the Medusa server's URL (``https://shop.example.com``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    base_url_example: ClassVar[str] = "https://shop.example.com"

    publishable_key: str | None = None
    """``pk_...``: sent as ``x-publishable-api-key`` on ``/store`` calls (identity role)."""
    secret_api_key: SecretStr | None = None
    """``sk_...``: a secret API key of an admin user, for the ``/admin`` calls."""


def _path(*parts: str) -> str:
    """Path segments quoted so an id can never climb out of its resource (``../``)."""
    return "/".join(quote(part, safe="") if i else part for i, part in enumerate(parts))


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a Medusa JWT, unverified: only Medusa can verify it, and we only read which
    login and customer it names (``auth_identity_id``, ``actor_id``)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        raise InvalidRequest("Medusa: the token is not a JWT") from None
    if not isinstance(claims, dict):
        raise InvalidRequest("Medusa: the token's payload is not an object")
    return claims


def split_name(name: str) -> tuple[str, str | None]:
    """Medusa keeps first and last name: the last word is the last name (one word: first only)."""
    first, _, last = name.strip().rpartition(" ")
    return (first.strip(), last) if first.strip() else (last, None)


def _customer_body(email: str, name: str, phone: str | None) -> dict[str, Any]:
    first, last = split_name(name)
    body: dict[str, Any] = {"email": email, "first_name": first}
    if last:
        body["last_name"] = last
    if phone:
        body["phone"] = phone
    return body


def _name_of(doc: Mapping[str, Any]) -> str:
    return " ".join(str(doc[k]) for k in ("first_name", "last_name") if doc.get(k))


def _customer(doc: Mapping[str, Any]) -> Customer:
    customer_id = str(doc["id"])
    return Customer(
        id=customer_id, number=customer_id, email=str(doc.get("email") or ""), name=_name_of(doc)
    )


def _mark(doc: Mapping[str, Any], key: str) -> str | None:
    metadata = doc.get("metadata")
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


# Client ---------------------------------------------------------------------------------------


class MedusaClient:
    """Owns the connection pool and the admin credentials; hands out the two role objects."""

    def __init__(self, settings: MedusaSettings) -> None:
        self.settings = settings
        base_url = settings.required("base_url")
        self._secret = settings.required("secret_api_key")
        # Medusa reads a secret API key as HTTP Basic with the key as user and no password.
        self._basic = base64.b64encode(f"{self._secret}:".encode()).decode()
        self._http = VendorHttp(MEDUSA, base_url, **settings.http_options())
        self._http.redact_always(lambda: (self._secret, self._basic))
        self.identity = MedusaIdentity(self)
        self.customers = MedusaCustomers(self)

    @classmethod
    def from_env(cls) -> MedusaClient:
        """Built at worker start-up: missing or invalid settings stop it right there."""
        return cls(load_vendor_settings(MedusaSettings))

    @property
    def publishable_key(self) -> str:
        return self.settings.required("publishable_key", "identity")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def admin(
        self,
        method: str,
        path: str,
        *,
        allow: Collection[int] = (),
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """An ``/admin`` call with the secret API key."""
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Basic {self._basic}"}
        return await self._http.request(
            method, path, allow=allow, idempotent=idempotent, headers=headers, **kwargs
        )

    async def store(
        self,
        method: str,
        path: str,
        *,
        bearer: str | None = None,
        allow: Collection[int] = (),
        redact: tuple[str, ...] = (),
        typed: Mapping[str, type[ProviderError]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A ``/store`` or ``/auth`` call: the publishable key (``/store``), a customer token."""
        headers = dict(kwargs.pop("headers", {}))
        if path.startswith("/store"):
            headers[PUBLISHABLE_KEY_HEADER] = self.publishable_key
        return await self._http.request(
            method,
            path,
            auth=bearer,
            allow=allow,
            redact=redact,
            typed=typed,
            headers=headers,
            **kwargs,
        )

    async def customers_by_email(
        self, email: str, *, has_account: bool | None = None
    ) -> list[dict[str, Any]]:
        params = {"email": email, "fields": CUSTOMER_FIELDS, "limit": "50"}
        if has_account is not None:
            params["has_account"] = "true" if has_account else "false"
        body = MEDUSA.json_object(await self.admin("GET", ADMIN_CUSTOMERS, params=params))
        found = [c for c in body.get("customers") or [] if isinstance(c, dict)]
        # Medusa's filter is exact; checked again so a looser server never links another record.
        return [c for c in found if str(c.get("email") or "").lower() == email.lower()]

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        response = await self.admin(
            "GET",
            _path(ADMIN_CUSTOMERS, customer_id),
            params={"fields": CUSTOMER_FIELDS},
            allow=(404,),
        )
        if response.status_code == 404:
            return None
        doc = MEDUSA.json_object(response).get("customer")
        if not isinstance(doc, dict):
            raise InvalidRequest(f"Medusa customer {customer_id}: the answer has no customer")
        return doc

    async def delete_customer(self, customer_id: str) -> bool:
        """Soft delete (Medusa also unbinds the login); ``False`` if it was gone already."""
        if not customer_id.startswith("cus_") or await self.customer(customer_id) is None:
            return False
        await self.admin("DELETE", _path(ADMIN_CUSTOMERS, customer_id), allow=(404,))
        return True


def _principal(doc: Mapping[str, Any], principal_id: str | None = None) -> Principal:
    """A Medusa account customer as the login it is bound to (one record)."""
    customer = _customer(doc)
    return Principal(
        id=principal_id or customer.id,
        email=customer.email,
        name=customer.name or "",
        active=True,
        version=str(doc.get("updated_at") or ""),
        customer_id=customer.id,
        customer_number=customer.number,
    )


# Identity -------------------------------------------------------------------------------------


class MedusaIdentity:
    """``IdentityProvider``: a login (auth identity) and its customer, made at activation."""

    in_process = False
    capabilities = IdentityCapabilities(
        login_created=LoginCreated.ACTIVATION,
        one_record=True,
        login_undo=LoginUndo.DEACTIVATE,
        code=CodeOwner.OURS,
    )

    def __init__(self, client: MedusaClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """Nothing to do: the ``MedusaClient`` owns the connections."""

    async def find_principal(self, email_canonical: str) -> Principal | None:
        """The email's account customer (``has_account=true``): an active login with its
        customer. A login without a customer is not visible to the admin API (module docstring)."""
        found = await self._client.customers_by_email(email_canonical, has_account=True)
        return _principal(found[0]) if found else None

    async def get_principal(self, principal_id: str) -> Principal | None:
        """By customer id (what ``find_principal`` answers); an auth identity cannot be read."""
        if not principal_id.startswith("cus_"):
            return None
        doc = await self._client.customer(principal_id)
        return _principal(doc) if doc is not None and doc.get("has_account") else None

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        """Never called: with ``login_created=ACTIVATION`` nothing is created at sign-up."""

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        """Never called for ``login_created=ACTIVATION``; the login is created active."""
        raise InvalidRequest("Medusa logins are created active at activation (create_principal)")

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        """The login and its customer, at activation (module docstring: the existing-identity
        rule, retries, the mark)."""
        client = self._client
        email = new.email_canonical
        token, created_login = await self._login_token(email, password)
        claims = jwt_claims(token)
        bound = str(claims.get("actor_id") or "")
        if bound:
            return await self._existing_customer(new, bound, str(claims["auth_identity_id"]))
        part = new.customer
        body = _customer_body(email, part.name if part else new.name, new.phone)
        doc = await self._create_customer(email, password, token, body, repeat=True)
        customer_id = str(doc["id"])
        try:
            metadata = {**(part.profile if part else {}), REGISTRATION_MARK: new.id}
            marked = await client.admin(
                "POST",
                _path(ADMIN_CUSTOMERS, customer_id),
                params={"fields": CUSTOMER_FIELDS},
                json={"metadata": metadata},
                idempotent=True,  # the same update again changes nothing
            )
            doc = MEDUSA.json_object(marked).get("customer") or doc
        except Exception:
            await self._clean_up(customer_id)
            raise
        log.info(
            "Medusa customer %s created for principal %s (%s login)",
            customer_id,
            new.id,
            "new" if created_login else "existing",
        )
        return _principal(doc, str(claims.get("auth_identity_id") or customer_id))

    async def _login_token(self, email: str, password: str) -> tuple[str, bool]:
        """A registration token for a new login, else a login token for the existing one with
        this password (``AccountExists`` if the password does not match); whether we created it."""
        body = {"email": email, "password": password}
        redact = (password,)
        response = await self._client.store(
            "POST", REGISTER_PATH, json=body, allow=(401,), redact=redact
        )
        if response.status_code == 200:
            return self._token(response), True
        detail = MEDUSA.describe(response).text
        if IDENTITY_EXISTS not in detail:  # a body Medusa's emailpass provider refuses
            raise InvalidRequest(f"Medusa POST {REGISTER_PATH}: HTTP 401 {scrub(detail, redact)}")
        return await self.login(email, password), False

    async def login(self, email: str, password: str) -> str:
        """``POST /auth/customer/emailpass``; a wrong password is ``AccountExists``."""
        response = await self._client.store(
            "POST",
            LOGIN_PATH,
            json={"email": email, "password": password},
            allow=(401,),
            redact=(password,),
            idempotent=True,  # a login changes nothing
        )
        if response.status_code == 401:
            raise AccountExists(
                "Medusa: the email has a login with another password; it is not taken over"
            )
        return self._token(response)

    @staticmethod
    def _token(response: httpx.Response) -> str:
        token = MEDUSA.json_object(response).get("token")
        if not isinstance(token, str) or not token:
            raise InvalidRequest(f"Medusa {response.request.url.path}: the answer has no token")
        return token

    async def _create_customer(
        self, email: str, password: str, token: str, body: dict[str, Any], *, repeat: bool
    ) -> dict[str, Any]:
        """``POST /store/customers`` with ``token``; an expired token is renewed by logging in
        again, a lost answer is asked once more (its 422 read as the first one's success)."""
        try:
            response = await self._client.store(
                "POST", STORE_CUSTOMERS, bearer=token, json=body, allow=(401, 422)
            )
        except ProviderUnavailable:
            if not repeat:
                raise
            log.info("Medusa POST /store/customers unanswered; sending it once more")
            return await self._create_customer(email, password, token, body, repeat=False)
        if response.status_code == 401:  # the auth middleware: token expired (or unknown)
            if not repeat:
                raise MEDUSA.error(response) or ProviderUnavailable("Medusa: 401")
            fresh = await self.login(email, password)
            bound = str(jwt_claims(fresh).get("actor_id") or "")
            if bound:
                return await self._ours_after_repeat(bound)
            return await self._create_customer(email, password, fresh, body, repeat=False)
        if response.status_code == 422:
            if repeat:  # the first try: an account customer exists that this login is not bound to
                raise AccountExists(
                    "Medusa: the email has a customer account bound to another login"
                )
            bound = str(jwt_claims(await self.login(email, password)).get("actor_id") or "")
            if not bound:
                raise AccountExists("Medusa: the email has a customer account of another login")
            return await self._ours_after_repeat(bound)
        doc = MEDUSA.json_object(response).get("customer")
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            raise InvalidRequest("Medusa POST /store/customers: the answer has no customer")
        return doc

    async def _ours_after_repeat(self, customer_id: str) -> dict[str, Any]:
        """The customer a create of this attempt made before its answer was lost."""
        doc = await self._client.customer(customer_id)
        if doc is None:
            raise NotFound(f"Medusa customer {customer_id} vanished while being created")
        return doc

    async def _existing_customer(
        self, new: NewPrincipal, customer_id: str, identity_id: str
    ) -> Principal:
        """The login already has a customer: ours if it carries this registration's mark (an
        earlier attempt of this step), else an account this registration may not take over."""
        doc = await self._client.customer(customer_id)
        if doc is not None and _mark(doc, REGISTRATION_MARK) == new.id:
            return _principal(doc, identity_id)
        raise AccountExists("Medusa: the email's login already has a customer account")

    async def _clean_up(self, customer_id: str) -> None:
        """The step fails after creating the customer: delete it now (best effort; the
        workflow's undo finds only marked customers)."""
        try:
            await self._client.delete_customer(customer_id)
            log.info("Medusa customer %s deleted: its creating step failed", customer_id)
        except ProviderError as err:
            log.warning("Medusa customer %s left behind: %s", customer_id, err.message)

    async def undo_principal(self, principal_id: str) -> bool:
        """Delete the customer this registration created (marked with ``principal_id``); the
        login stays, unbound (no API deletes one). Idempotent; never another record."""
        email = _email_of_registration()
        if email is None:
            log.warning(
                "Medusa: undo of principal %s cannot find its customer without the email"
                " (hashed workflow IDs); a customer it created stays",
                principal_id,
            )
            return False
        undone = False
        for doc in await self._client.customers_by_email(email, has_account=True):
            if _mark(doc, REGISTRATION_MARK) == principal_id:
                undone = await self._client.delete_customer(str(doc["id"])) or undone
        return undone


def _email_of_registration() -> str | None:
    """The canonical email in the running registration's workflow ID (``registration-<email>``,
    ``WorkflowIdMode.EMAIL``); ``None`` with hashed IDs or outside an activity."""
    try:
        workflow_id = activity.info().workflow_id
    except RuntimeError:
        return None
    email = (workflow_id or "").removeprefix(WORKFLOW_ID_PREFIX)
    return (
        email
        if workflow_id and workflow_id.startswith(WORKFLOW_ID_PREFIX) and "@" in email
        else None
    )


# Customers ------------------------------------------------------------------------------------


class MedusaCustomers:
    """``CustomerProvider`` through the admin API (identity at another provider)."""

    in_process = False

    def __init__(self, client: MedusaClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """Nothing to do: the ``MedusaClient`` owns the connections."""

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        """The email's customer (an account customer first, else a guest), else a new guest
        customer marked with ``new.id``; a retried step finds its own by the mark."""
        found = await self._client.customers_by_email(new.email_canonical)
        for doc in found:
            if _mark(doc, CUSTOMER_MARK) == new.id:
                return CustomerLink(customer=_customer(doc), created=True)
        if found:
            found.sort(key=lambda doc: not doc.get("has_account"))
            return CustomerLink(customer=_customer(found[0]), created=False)
        body = _customer_body(new.email_canonical, new.name, new.phone)
        body["metadata"] = {**new.profile, CUSTOMER_MARK: new.id}
        response = await self._client.admin(
            "POST",
            ADMIN_CUSTOMERS,
            params={"fields": CUSTOMER_FIELDS},
            json=body,
            allow=(422,),
        )
        if response.status_code == 422:  # one appeared meanwhile (or a lost answer's own)
            again = await self._client.customers_by_email(new.email_canonical)
            if not again:
                raise MEDUSA.error(response) or InvalidRequest("Medusa: duplicate customer")
            return CustomerLink(
                customer=_customer(again[0]), created=_mark(again[0], CUSTOMER_MARK) == new.id
            )
        created = MEDUSA.json_object(response).get("customer")
        if not isinstance(created, dict):
            raise InvalidRequest("Medusa POST /admin/customers: the answer has no customer")
        return CustomerLink(customer=_customer(created), created=True)

    async def undo_customer(self, customer_id: str) -> bool:
        """Soft delete by Medusa id; the registration's own UUID names nothing there."""
        return await self._client.delete_customer(customer_id)


def _client(resources: Resources) -> MedusaClient:
    """One client (connection pool) for both roles."""
    return resources.shared("medusa", MedusaClient.from_env)


def _identity(resources: Resources) -> MedusaIdentity:
    client = _client(resources)
    _ = client.publishable_key  # required for the identity role: checked at start-up
    return client.identity


SPEC = ProviderSpec(
    name="medusa",
    identity=_identity,
    customers=lambda resources: _client(resources).customers,
    mail=None,
    capabilities=MedusaIdentity.capabilities,
    env_prefix=ENV_PREFIX,
    email_rule=None,
    listable_leftovers=False,
)
