"""Hantera as the identity, customers and mail provider (all three roles, one HTTP client).

Follows Hantera's customer-registration guide: a customer's login is an IAM principal (created
inactive, ``properties.activated: false``), the customer is an Asset actor of the ``customer`` type
(Hantera numbers it from the type's prefix: CUST100001, ...), activation links the two
(``actorId``) with the principal's etag as ``If-Match``, and mails go through the Sendings API.

Why this shape:

* One ``VendorHttp`` per worker (``activities.providers.http``: a pool of keep-alive connections,
  explicit timeouts, the shared status mapping and redaction) and one OAuth2 client-credentials
  token, cached until shortly before it expires and shared by the three roles: ``HanteraClient``
  owns both and hands out the role objects.
* Hantera's error bodies (``error``/``code`` and ``message``) read with the shared
  ``describe_json``; a rejected client (401 after one token refresh, 403, a token endpoint's
  client-setup error) says which settings to check and how to set the client up (``HANTERA``).
* Error messages name ids and statuses, never passwords, tokens or email addresses: they end up in
  workflow history and the Temporal UI.
* Where the guide and Hantera's API reference disagree, the reference wins: assets get their
  fields with ``setDynamicFields`` (the guide writes ``setDynamic``), a principal's etag is read
  from the reference's ``eTag`` as well as the guide's ``etag``, and its email and name from the
  top level (reference) or ``properties`` (guide). What neither documents is an ASSUMPTION, each
  isolated in one place that says so: the password grant for the principal's own token and the
  code of a password-policy rejection (``change_password_as_principal``); the graph node field
  ``dynamic`` (``CUSTOMER_NODE_FIELDS``; the guide only filters on ``dynamic.<field>``) and that the
  graph may lag behind a create (``HanteraCustomers._created_before``); 409 for a taken
  ``externalReference`` (``HanteraCustomers.link_or_create_customer``); the ``delete`` message and
  404 for an asset that is not there, also for an id that never named one
  (``HanteraCustomers._delete_asset``; we never create at a GUID of our own, though the create
  message allows it, so the registration's own customer id only finds assets through the graph);
  ``Idempotency-Key`` on sendings (``HanteraMail.send``).

Every step survives a transient failure of any of its requests, and a retried step goes on from
where the last attempt stopped. ``VendorHttp`` repeats each request that is safe to repeat within
about 3 s (``activities.providers.http.Retries``), so one 503, 429 or dropped connection costs a
retry of that request, not of the step; what fails for longer fails the step retryably, and
Temporal's retry of the activity runs it again. Whether a request left its effect behind before
its answer was lost cannot be told, so each step reads a repeat's refusal as its own earlier
success where it can be, and each step's start skips what an earlier attempt did:

* ``create_principal`` (read the id; PUT the principal; reset its password; a password-grant
  token; change the password; read it back). The id is the workflow's, so the first read finds
  an earlier attempt's principal and the PUT (which replaces: safe to repeat) is skipped. The
  reset may be repeated (the newest temporary password answered is the one to use), the token
  request too. The change is repeated as well: a repeat refused because the first one went
  through (``currentPassword`` is no longer the temporary one) is checked with a password grant of
  the chosen password, and if that works the change is done. A principal found inactive gets the
  reset and change again (they cannot be read back); one found active is returned untouched.
* ``link_or_create_customer`` (graph query by email; create with ``externalReference`` = the
  registration's customer id). The query reads; the create is keyed by that id, which Hantera
  keeps unique, so a repeat whose first try was done is a 409 and the asset is looked up by it
  (``_created_before``); a retried step finds it by email first (``registrationId``).
* ``activate_principal`` (read the principal; PUT it back activated under ``If-Match``). A repeat
  of a PUT that was done is a 412 (its etag changed): the principal is read again and, found
  active and linked to this customer, it is the result. The identity activity also reads the
  principal first and returns it if it is already active.
* ``send``: one request with an ``Idempotency-Key``, repeated with the same key (ASSUMPTION above).
* ``find_principal``, ``find_customer``, ``get_principal`` and ``decoy_create`` only read;
  ``undo_principal`` (DELETE) and ``undo_customer`` (the delete message) are repeated as they are:
  a repeat of one that was done is a 404, gone either way (it then reports ``False``).

``python -m activities.providers.hantera setup [--apply]`` prints (or applies) the one-time setup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from activities.errors import (
    ConcurrentModification,
    Conflict,
    InvalidRequest,
    NotFound,
    PasswordRejected,
    ProviderError,
    ProviderUnavailable,
)
from activities.providers.http import ClientCredentialsToken, Vendor, VendorHttp
from activities.providers.settings import VendorSettings, load_vendor_settings
from activities.providers.spec import ProviderSpec, Resources
from activities.roles import (
    Customer,
    CustomerLink,
    IdentityCapabilities,
    Leftover,
    LeftoverPage,
    MailMessage,
    NewCustomer,
    NewPrincipal,
    Principal,
    activation_target,
)
from common.settings import Settings

log = logging.getLogger(__name__)

ENV_PREFIX = "REGISTRATION_HANTERA_"
PRINCIPALS = "/resources/iam/principals"
OAUTH_PATH = "/oauth/token"
GRAPH_PATH = "/resources/graph"
ASSETS_PATH = "/resources/actors/asset"
SENDINGS_PATH = "/resources/sendings/email"

PENDING_MARK = "registrationPending"
"""Principal property set by ``create_principal``: only a principal carrying it (and still
inactive, unlinked) is a registration's leftover that a new registration may replace."""
ACTIVATION_KEYS = ("activationCode", "activationCodeExpires", PENDING_MARK)
"""Principal properties of the guide's activation-code flow (and our mark), removed on
activation."""
WRITABLE_PRINCIPAL_FIELDS = (
    "name",
    "email",
    "phone",
    "picture",
    "settings",
    "roles",
    "acl",
    "accessAttributes",
    "properties",
)
"""What a principal PUT accepts; activation sends all of them back because PUT replaces."""
CUSTOMER_NODE_FIELDS = ["assetId", "assetNumber", "dynamic"]
"""ASSUMPTION: the graph answers ``dynamic`` (the asset's dynamic fields as an object) as a node
field; the guide selects only ``assetId`` and ``assetNumber`` but filters on ``dynamic.email``."""
PRINCIPALS_PAGE = 100
"""Principals per list page: the documented maximum (the default is 50)."""
POLICY_REJECTION_CODE = "PASSWORD_POLICY"
"""ASSUMPTION: the error code of a new password the tenant's password policy refuses at
``/resources/me/password`` (Hantera documents none); only it is ``PasswordRejected``."""
CLIENT_GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", "password")
"""The grant types our OAuth client needs: the guide's three, plus ``password`` for the token that
sets a principal's chosen password (``change_password_as_principal``)."""
HANTERA = Vendor(
    "Hantera",
    auth_hint=f" (check {ENV_PREFIX}CLIENT_ID/CLIENT_SECRET and the client's grant types and ACL:"
    " python -m activities.providers.hantera setup)",
)
"""Hantera's error bodies are flat (``error``/``code``, ``message``): the shared reading fits."""


class HanteraSettings(VendorSettings):
    """``REGISTRATION_HANTERA_*``. The three credentials are checked when the client is built;
    ``base_url`` is the tenant URL (the guide's ``https://<tenant url>``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    base_url_example: ClassVar[str] = "https://<tenant>.hantera.cloud"

    client_id: str | None = None
    client_secret: SecretStr | None = None
    customer_type_key: str = "customer"
    """Asset type of customers (``/registry/actors/asset/types/<key>``)."""
    customers_edge: str = "customers"
    """Graph set of that type, queried to find customers."""
    customer_role: str = "customer"
    """Marker role given to customer principals (no permissions of its own)."""


def _path(*parts: str) -> str:
    """Path segments quoted so an id can never climb out of its resource (``../``)."""
    return "/".join(quote(part, safe="") if i else part for i, part in enumerate(parts))


# Client ---------------------------------------------------------------------------------------


class HanteraClient:
    """Owns the connection pool and the client token; hands out the three role objects."""

    def __init__(self, settings: HanteraSettings) -> None:
        self.settings = settings
        base_url = settings.required("base_url")
        client_id = settings.required("client_id")
        client_secret = settings.required("client_secret")
        self._http = VendorHttp(HANTERA, base_url, **settings.http_options())
        self._token = ClientCredentialsToken(self._http, OAUTH_PATH, client_id, client_secret)
        self.identity = HanteraIdentity(self)
        self.customers = HanteraCustomers(self)
        self.mail = HanteraMail(self)

    @classmethod
    def from_env(cls) -> HanteraClient:
        """Built at worker start-up: missing or invalid settings stop it right there."""
        return cls(load_vendor_settings(HanteraSettings))

    async def aclose(self) -> None:
        """Close the pooled connections; idempotent."""
        await self._http.aclose()

    async def oauth_token(
        self, form: dict[str, str], *, redact: Sequence[str] = ()
    ) -> tuple[str, float]:
        """POST the form (plus our client credentials) to ``/oauth/token``: token and lifetime."""
        return await self._token.grant(form, redact=redact)

    async def call(
        self,
        method: str,
        path: str,
        *,
        allow: Collection[int] = (),
        bearer: str | None = None,
        redact: Sequence[str] = (),
        typed: Mapping[str, type[ProviderError]] | None = None,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A request with the client token (refreshed once on 401), or with ``bearer`` as is.

        Statuses in ``allow`` (e.g. 404 for a lookup) are returned instead of raised; ``typed``
        as in ``Vendor.error``; ``idempotent`` as in ``VendorHttp.request`` (a POST is repeated
        after a transient failure only if it says so).
        """
        auth = bearer or self._token
        return await self._http.request(
            method,
            path,
            auth=auth,
            allow=allow,
            redact=redact,
            typed=typed,
            idempotent=idempotent,
            **kwargs,
        )


# Identity -------------------------------------------------------------------------------------


async def change_password_as_principal(
    client: HanteraClient, email: str, temporary_password: str, new_password: str
) -> None:
    """Replace the temporary password by the chosen one, acting as the principal.

    ASSUMPTION: the guide changes the password with ``POST /resources/me/password``
    (``currentPassword``/``newPassword``) under a "token for the user" it does not say how to
    get. We take it with the OAuth2 password grant (``username``=email, ``password``=the temporary
    password) at ``/oauth/token`` with our client credentials, so the client needs the
    ``password`` grant type besides the guide's three (``setup_plan``); without it the token
    endpoint answers ``unauthorized_client``, a retryable configuration error. Only the
    policy's own code (``POLICY_REJECTION_CODE``) is ``PasswordRejected``: anything else, e.g. a
    wrong ``currentPassword`` after another reset, maps by status. Replace this function when
    Hantera documents the step (or an admin endpoint that sets a password directly).

    Repeated after a transient failure: a change that went through but whose answer was lost
    makes its repeat fail (the temporary password is no longer current), so a refusal other
    than the policy's is checked with a password grant of ``new_password``: if that succeeds,
    the password is already the chosen one and the change is done. (A grant that fails counts
    as a failed login at Hantera: one per refused change.)
    """
    secrets = (temporary_password, new_password)
    token, _ = await client.oauth_token(
        {"grant_type": "password", "username": email, "password": temporary_password},
        redact=secrets,
    )
    try:
        await client.call(
            "POST",
            "/resources/me/password",
            bearer=token,
            redact=secrets,
            typed={POLICY_REJECTION_CODE: PasswordRejected},
            idempotent=True,  # with the check below
            json={"currentPassword": temporary_password, "newPassword": new_password},
        )
    except PasswordRejected:
        raise
    except InvalidRequest:
        if not await _password_is(client, email, new_password):
            raise
        log.info("password change already done by an earlier try")


async def _password_is(client: HanteraClient, email: str, password: str) -> bool:
    """Whether ``password`` is the principal's password now (a password grant with it works)."""
    try:
        await client.oauth_token(
            {"grant_type": "password", "username": email, "password": password},
            redact=(password,),
        )
    except InvalidRequest:
        return False
    return True


def _field(doc: dict[str, Any], key: str) -> Any:
    """A principal field: top level in the API reference, under ``properties`` in the guide."""
    value = doc.get(key)
    return value if value is not None else (doc.get("properties") or {}).get(key)


def _principal(response: httpx.Response) -> Principal:
    doc = HANTERA.json_object(response)
    properties = doc.get("properties") or {}
    # The guide reads ``etag``, the API reference answers ``eTag``; else the (quoted) header.
    etag = doc.get("etag") or doc.get("eTag") or response.headers.get("ETag", "").strip('"')
    if not etag or not doc.get("id"):
        path = response.request.url.path
        raise InvalidRequest(f"Hantera {path}: the principal has no id or no etag")
    return Principal(
        id=str(doc["id"]),
        email=str(_field(doc, "email") or ""),
        name=str(_field(doc, "name") or ""),
        active=properties.get("activated") is True,
        version=str(etag),
        customer_id=properties.get("actorId"),
        # Ours, and as ``create_principal`` left it: not one that staff or another flow made.
        replaceable=properties.get(PENDING_MARK) is True
        and properties.get("activated") is False
        and not properties.get("actorId"),
    )


class HanteraIdentity:
    """``IdentityProvider`` on IAM principals. Their email is the canonical address (the login)."""

    in_process = False
    capabilities = IdentityCapabilities()
    """Principal and customer asset apart; the principal created inactive and deleted by
    compensation; our own codes."""

    def __init__(self, client: HanteraClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """Nothing to do: the ``HanteraClient`` owns the connections."""

    async def find_principal(self, email_canonical: str) -> Principal | None:
        """Via the IAM list endpoint ``GET /resources/iam/principals?email=``.

        Chosen over the graph ``identities`` edge because the address travels as a query
        parameter (no filter string to escape), IAM is the source of truth (the graph is an
        index of it), suspended principals can be included (their address is still taken), and
        the graph exposes neither ``activated`` nor the etag, so it would need a second call
        anyway. The list's matching rule is not documented, so hits are re-checked exactly and
        the documented cursor is followed (``after`` = the page's ``lastCursor``) past pages of
        near-misses until the match or an empty, cursorless or non-advancing page; the match is
        re-read by id for its etag.
        """
        params = {
            "email": email_canonical,
            "includeSuspended": "true",
            "limit": str(PRINCIPALS_PAGE),
        }
        while True:
            page = HANTERA.json_object(await self._client.call("GET", PRINCIPALS, params=params))
            items = page.get("principals") or []
            for item in items:
                if str(_field(item, "email") or "").lower() == email_canonical.lower():
                    return await self.get_principal(str(item["id"]))
            cursor = page.get("lastCursor")
            if not items or not cursor or str(cursor) == params.get("after"):
                return None
            params["after"] = str(cursor)

    async def get_principal(self, principal_id: str) -> Principal | None:
        response = await self._client.call("GET", _path(PRINCIPALS, principal_id), allow=(404,))
        return None if response.status_code == 404 else _principal(response)

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        """PUT the principal inactive, then set the chosen password as the guide does.

        Email and name go at the top level (the API reference's PUT body) and also into
        ``properties``, where the guide puts them and where code written after it reads them
        (``principal.properties.email`` for its graph lookup).

        Retry-safe: an existing principal with this id and email is kept (another email is a
        ``Conflict``); unless it is already active, the password steps run again, which heals
        an attempt that stopped between the PUT and the password change. A principal with this
        email but another id makes Hantera answer 409: ``Conflict``. Each request is repeated
        in place after a transient failure (module docstring).
        """
        existing = await self.get_principal(new.id)
        if existing is not None and existing.email.lower() != new.email_canonical:
            raise Conflict(f"principal {new.id} already exists with another email")
        if existing is not None and existing.active:
            return existing
        if existing is None:
            properties: dict[str, Any] = {
                "name": new.name,
                "email": new.email_canonical,
                "activated": False,
                PENDING_MARK: True,
            }
            properties.update(
                {k: v for k, v in (("locale", new.locale), ("tenant", new.tenant)) if v}
            )
            body: dict[str, Any] = {
                "name": new.name,
                "email": new.email_canonical,
                "roles": [self._client.settings.customer_role],
                "properties": properties,
            }
            if new.phone:
                body["phone"] = new.phone
            await self._client.call("PUT", _path(PRINCIPALS, new.id), json=body)
        # Idempotent: a repeated reset replaces the temporary password, and the answer we get
        # carries the current one.
        reset = await self._client.call(
            "POST", _path(PRINCIPALS, new.id, "password", "reset"), idempotent=True
        )
        temporary = HANTERA.json_object(reset).get("temporaryPassword")
        if not isinstance(temporary, str) or not temporary:
            raise InvalidRequest(f"Hantera password reset of {new.id}: no temporaryPassword")
        await change_password_as_principal(self._client, new.email_canonical, temporary, password)
        created = await self.get_principal(new.id)
        if created is None:
            raise NotFound(f"principal {new.id} was deleted while being created")
        return created

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        """Only the create's first request (the read of ``new.id``, which is not there). The rest
        of a create (the PUT, the password reset and change: four more round trips, and Hantera's
        own password hashing) cannot be mirrored without changing something, so with Hantera the
        first mail to an email with an account still goes out sooner than a new one's (README,
        "How a registration runs", step 1)."""
        await self.get_principal(new.id)

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        """PUT the whole principal back, activated and linked, guarded by ``expected_version``.

        As in the guide: ``activated: true``, ``actorId`` = the customer asset, plus
        ``customerNumber``; activation-code properties are dropped. The etag goes both as
        ``If-Match`` (the guide) and as ``etag`` in the body (the API reference), so whichever
        Hantera checks guards the write; a mismatch is 412, ``ConcurrentModification``. Strict
        like the local provider: an already activated principal has a newer etag, unless it is
        active and linked to ``customer_id``: then the 412 answered a repeat of this very write,
        whose first try went through unanswered, and the principal is returned.
        """
        path = _path(PRINCIPALS, principal_id)
        doc = HANTERA.json_object(await self._client.call("GET", path))
        properties = {
            k: v for k, v in (doc.get("properties") or {}).items() if k not in ACTIVATION_KEYS
        }
        properties.update(activated=True, actorId=customer_id, customerNumber=customer_number)
        body = {k: doc[k] for k in WRITABLE_PRINCIPAL_FIELDS if k in doc}
        body.update(properties=properties, etag=expected_version)
        try:
            response = await self._client.call(
                "PUT", path, json=body, headers={"If-Match": expected_version}
            )
        except ConcurrentModification:
            current = await self.get_principal(principal_id)
            if current is None or not current.active or current.customer_id != customer_id:
                raise
            log.info("principal %s: activation already done by an earlier try", principal_id)
            return current
        try:
            return _principal(response)
        except InvalidRequest:
            # Accepted, but the answer carries no principal (the guide shows none): read it back
            # rather than fail, and so compensate, an activation that happened.
            activated = activation_target(
                await self.get_principal(principal_id), principal_id, customer_id
            )
            if not activated.active:
                raise ProviderUnavailable(
                    f"Hantera principal {principal_id}: the accepted activation is not visible yet"
                ) from None
            return activated

    async def undo_principal(self, principal_id: str) -> bool:
        response = await self._client.call("DELETE", _path(PRINCIPALS, principal_id), allow=(404,))
        return response.status_code != 404

    async def list_leftovers(
        self, created_before: datetime, after: str | None, limit: int
    ) -> LeftoverPage:
        """``Leftovers``: the principals as ``create_principal`` leaves them (our
        ``registrationPending`` mark, ``activated: false``, no ``actorId``: ``replaceable``)."""
        pending, cursor = await _pending_principals(self._client, created_before, after, limit)
        return LeftoverPage(records=pending, after=cursor)


# Customers ------------------------------------------------------------------------------------

_UNSAFE_IN_FILTER = frozenset("'\"\\")


def filter_literal(value: str) -> str:
    """``value`` as a quoted graph-filter string, refusing anything that could leave the quotes.

    Rejected, not escaped: Hantera's filter language (a subset of Filtrera) documents no escape
    sequence, and a guessed one is itself an injection (if backslash is no escape there, ``\\'``
    ends the string). Quotes, backslashes and control characters are legal in an address
    (``o'brien@...``) but rare; such an address fails clearly and non-retryably instead of
    querying the wrong customers.
    """
    if any(ch in _UNSAFE_IN_FILTER or unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidRequest(
            "value cannot be used in a Hantera graph filter: it contains a quote, a backslash"
            " or a control character"
        )
    return f"'{value}'"


def _customer(node: dict[str, Any]) -> Customer:
    dynamic = node.get("dynamic") or {}
    if not node.get("assetId") or not node.get("assetNumber"):
        raise InvalidRequest("Hantera graph: a customer node lacks assetId or assetNumber")
    return Customer(
        id=str(node["assetId"]),
        number=str(node["assetNumber"]),
        email=str(dynamic.get("email") or ""),
        name=dynamic.get("name"),
    )


def _created_asset(body: Any, type_key: str, external_reference: str) -> tuple[str, str]:
    """Asset id and number from the ``paths`` of a create answer.

    Documented answer: ``{"paths": ["resources/actors/asset/<guid>",
    "resources/actors/asset/<type>/<number>", "resources/actors/asset/<type>/<externalRef>"]}``.
    The guide's best practice 3: no paths means no asset, never link to nothing.
    """
    paths = body.get("paths") if isinstance(body, dict) else None
    if not paths:
        raise InvalidRequest(
            "Hantera created no customer asset: the answer has no paths"
            f" (is asset type {type_key!r} defined, and may the client create assets?)"
        )
    asset_id = str(paths[0]).rstrip("/").rsplit("/", 1)[-1]
    numbers = [
        segments[-1]
        for segments in (str(p).rstrip("/").split("/") for p in paths[1:])
        if len(segments) >= 2 and segments[-2] == type_key and segments[-1] != external_reference
    ]
    if not asset_id or not numbers:
        raise InvalidRequest(f"Hantera created asset paths without an id or a number: {paths!r}")
    return asset_id, numbers[0]


class HanteraCustomers:
    """``CustomerProvider`` on Asset actors of the customer type, found through the graph."""

    in_process = False

    def __init__(self, client: HanteraClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """Nothing to do: the ``HanteraClient`` owns the connections."""

    async def _customers_where(self, field: str, value: str) -> list[dict[str, Any]]:
        """Customer nodes whose dynamic ``field`` equals ``value`` (the guide's graph query)."""
        query = [
            {
                "edge": self._client.settings.customers_edge,
                "filter": f"dynamic.{field} == {filter_literal(value)}",
                "node": {"fields": CUSTOMER_NODE_FIELDS},
            }
        ]
        response = await self._client.call("POST", GRAPH_PATH, json=query, idempotent=True)
        body = HANTERA.json(response)
        first = body[0] if isinstance(body, list) and body else {}
        return list(first.get("nodes") or [])

    async def find_customer(self, email_canonical: str) -> Customer | None:
        nodes = await self._customers_where("email", email_canonical)
        return _customer(nodes[0]) if nodes else None

    async def create_customer(self, new: NewCustomer) -> Customer:
        """Create the asset (``link_or_create_customer``); a customer that already has the email
        is a ``Conflict``."""
        link = await self.link_or_create_customer(new)
        if not link.created:
            raise Conflict(f"email already belongs to customer asset {link.customer.id}")
        return link.customer

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        """The customer asset with this email, or a new one (Hantera numbers it from the type's
        prefix); retry-safe.

        First the customers with this email: one carrying ``registrationId`` = ``new.id`` is a
        previous attempt's and comes back as created; any other is linked. The create also sets
        ``externalReference`` = ``new.id``, which Hantera keeps unique across assets, so even an
        attempt the graph has not indexed yet cannot be created twice. ASSUMPTION: a taken
        ``externalReference`` is answered 409; we then look the asset up by ``registrationId``
        (retryable while the graph has not caught up).
        The create is repeated in place after a transient failure: a repeat of one that was done
        gets that 409 too.
        ``new.number_prefix`` is not sent: the prefix is the type's, set up once (``setup``).
        The fields are set with the asset command reference's ``setDynamicFields`` (command
        fields at its top level), not the guide's ``setDynamic`` (fields under ``body``).
        """
        nodes = await self._customers_where("email", new.email_canonical)
        mine = [n for n in nodes if (n.get("dynamic") or {}).get("registrationId") == new.id]
        if mine:
            return CustomerLink(customer=_customer(mine[0]), created=True)
        if nodes:
            return CustomerLink(customer=_customer(nodes[0]), created=False)
        type_key = self._client.settings.customer_type_key
        # Profile fields first: the fields the adapter relies on win over a profile key of the
        # same name.
        fields = {**new.profile, "email": new.email_canonical, "name": new.name}
        fields["registrationId"] = new.id
        fields.update({k: v for k, v in (("phone", new.phone), ("tenant", new.tenant)) if v})
        message = {
            "type": "create",
            "body": {
                "typeKey": type_key,
                "externalReference": new.id,
                "commands": [{"type": "setDynamicFields", "fields": fields}],
            },
        }
        try:
            response = await self._client.call(
                "POST", _path(ASSETS_PATH, "new"), json=[message], idempotent=True
            )
        except Conflict:
            return CustomerLink(customer=await self._created_before(new), created=True)
        asset_id, number = _created_asset(HANTERA.json(response), type_key, new.id)
        customer = Customer(id=asset_id, number=number, email=new.email_canonical, name=new.name)
        return CustomerLink(customer=customer, created=True)

    async def _created_before(self, new: NewCustomer) -> Customer:
        """The asset an earlier attempt created with this registration's ``externalReference``."""
        nodes = await self._customers_where("registrationId", new.id)
        if not nodes:
            raise ProviderUnavailable(
                f"customer asset of registration {new.id} exists but is not in the graph yet"
            )
        customer = _customer(nodes[0])
        if customer.email.lower() != new.email_canonical:
            raise Conflict(
                f"customer asset {customer.id} of registration {new.id} has another email"
            )
        return customer

    async def undo_customer(self, customer_id: str) -> bool:
        """Delete the asset; ``False`` if there was none.

        ``customer_id`` may also be the id a registration chose for the customer it creates
        (``NewCustomer.id``, stored as ``registrationId``): Hantera names the asset itself, so a
        create whose answer was lost leaves an asset only that id finds, and the registration's
        up-front undo deletes it that way. Only assets this registration created carry it, so a
        linked customer is never touched. (One the graph has not indexed yet is not found.)
        """
        if await self._delete_asset(customer_id):
            return True
        deleted = False
        for node in await self._customers_where("registrationId", customer_id):
            deleted |= await self._delete_asset(_customer(node).id)
        return deleted

    async def _delete_asset(self, asset_id: str) -> bool:
        """Send the asset its ``delete`` message; ``False`` if it was already gone.

        ASSUMPTION: Hantera lists a ``delete`` asset message but shows no request; we send it like
        the documented messages, ``POST /resources/actors/asset/<id>`` with ``[{"type":
        "delete"}]``, and take 404 (``NOT_FOUND``) as already deleted; also for the id a
        registration chose for its customer, which never names an asset (the create goes to
        ``new``, so Hantera picks the GUID).
        """
        response = await self._client.call(
            "POST",
            _path(ASSETS_PATH, asset_id),
            json=[{"type": "delete"}],
            allow=(404,),
            idempotent=True,  # a repeat of a delete that was done is a 404: gone either way
        )
        return response.status_code != 404

    async def list_leftovers(
        self, created_before: datetime, after: str | None, limit: int
    ) -> LeftoverPage:
        """``Leftovers``: the customer assets a registration created (``registrationId``) for
        the email of a principal that a registration left inactive (``HanteraIdentity``'s
        leftovers), so linked to no active login. Found through those principals: the graph
        filter we know takes equality only, so "every asset that has a ``registrationId``"
        cannot be asked; an asset whose principal is already gone is not found."""
        pending, cursor = await _pending_principals(self._client, created_before, after, limit)
        records = []
        for principal in pending:
            for node in await self._customers_where("email", principal.email_canonical):
                if (node.get("dynamic") or {}).get("registrationId"):
                    customer = _customer(node)
                    records.append(principal.model_copy(update={"id": customer.id}))
        return LeftoverPage(records=records, after=cursor)


async def _pending_principals(
    client: HanteraClient, created_before: datetime, after: str | None, limit: int
) -> tuple[list[Leftover], str | None]:
    """One page of the principal list (``after`` = the previous page's ``lastCursor``): those a
    registration left inactive and created before ``created_before``, and the next cursor.

    ASSUMPTION: a principal's creation time is ``createdAt`` (epoch seconds or ISO 8601); one
    without it counts as old enough (the registration's state still decides)."""
    params = {"limit": str(min(limit, PRINCIPALS_PAGE)), "includeSuspended": "true"}
    if after:
        params["after"] = after
    page = HANTERA.json_object(await client.call("GET", PRINCIPALS, params=params))
    items = page.get("principals") or []
    found = []
    for item in items:
        properties = item.get("properties") or {}
        email = str(_field(item, "email") or "").lower()
        pending = properties.get(PENDING_MARK) is True and properties.get("activated") is False
        if not pending or properties.get("actorId") or not item.get("id") or not email:
            continue
        created = _created_at(item.get("createdAt"))
        if created is not None and created >= created_before:
            continue
        found.append(Leftover(id=str(item["id"]), email_canonical=email, created_at=created))
    cursor = page.get("lastCursor")
    more = items and cursor and str(cursor) != after
    return found, str(cursor) if more else None


def _created_at(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


# Mail -----------------------------------------------------------------------------------------


class HanteraMail:
    """``MailProvider`` on Hantera's Sendings API."""

    in_process = False

    def __init__(self, client: HanteraClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """Nothing to do: the ``HanteraClient`` owns the connections."""

    async def send(self, message: MailMessage) -> None:
        """POST the rendered mail with its category and dynamic data.

        ASSUMPTION: the ``Idempotency-Key`` header (our message key) makes Hantera deliver a
        retried send once; its docs do not mention it. Without that support a send whose answer
        was lost (timeout, dropped connection) can be delivered twice. On that assumption the
        send is repeated in place after a transient failure, with the same key.
        """
        body = {
            "to": message.to,
            "subject": message.subject,
            "body": {"html": message.html, "plainText": message.text},
            "category": message.category,
            "dynamic": message.dynamic,
        }
        headers = {"Idempotency-Key": message.idempotency_key}
        await self._client.call(
            "POST",
            SENDINGS_PATH,
            json=body,
            headers=headers,
            redact=message.redact,
            idempotent=True,
        )
        log.info("%s mail sent via Hantera", message.category)


# One-time setup -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupStep:
    title: str
    method: str
    path: str
    body: Any
    manual: str | None = None
    """Why the step is not applied with the client's own credentials (then it is printed)."""


def setup_plan(settings: HanteraSettings, number_prefix: str) -> list[SetupStep]:
    """The guide's one-time setup for our settings: asset type, customer role, and the
    client's grant types (the guide's plus ``password``, see ``change_password_as_principal``)
    and ACL."""
    type_key, role = settings.customer_type_key, settings.customer_role
    return [
        SetupStep(
            f"Customer asset type {type_key!r}: numbers {number_prefix}100001, ..."
            f" (same as `h_ apply` of uri /registry/actors/asset/types/{type_key})",
            "POST",
            f"/resources/registry/actors/asset/types/{type_key}",
            {
                "graphSetName": type_key,
                "defaultNumberPrefix": number_prefix,
                "relations": {"orders": {"node": "order", "cardinality": "many"}},
            },
        ),
        SetupStep(
            f"Role {role!r}: a marker without permissions",
            "PUT",
            f"/resources/iam/roles/{role}",
            {"description": "Customer role marker for e-commerce users", "acl": {"entries": []}},
        ),
        SetupStep(
            f"Grant types and ACL of client {settings.client_id or '<client id>'} (the password"
            " grant sets a principal's chosen password; ACL entries after the guide's first"
            " three are what this service also calls; check their names in Hantera's ACL docs)",
            "PUT",
            f"/resources/iam/clients/{settings.client_id or '<client id>'}",
            {
                "properties": {"grantTypes": list(CLIENT_GRANT_TYPES)},
                "acl": {
                    "entries": [
                        {"resource": "orders:*", "permission": "read"},
                        {"resource": "graph:*", "permission": "query"},
                        {"resource": "iam:principals:*", "permission": "read"},
                        {"resource": "iam:principals:*", "permission": "write"},
                        {"resource": "actors:asset:*", "permission": "write"},
                        {"resource": "sendings:*", "permission": "write"},
                    ]
                },
            },
            manual="needs an admin token (a client cannot widen its own grants or ACL), and the"
            " PUT replaces the client: merge these into its existing properties and ACL",
        ),
    ]


def _print_step(number: int, step: SetupStep) -> None:
    print(f"# {number}. {step.title}")
    if step.manual:
        print(f"# Manual step: {step.manual}.")
    print(f"{step.method} {step.path}")
    print(json.dumps(step.body, indent=2))
    print()


async def apply_setup(client: HanteraClient, steps: Sequence[SetupStep]) -> None:
    """Send the steps the client's credentials can do; print the others."""
    for number, step in enumerate(steps, 1):
        if step.manual:
            _print_step(number, step)
            continue
        await client.call(step.method, step.path, json=step.body)
        print(f"# {number}. applied: {step.method} {step.path}")


async def _apply_from_env(steps: Sequence[SetupStep]) -> None:
    client = HanteraClient.from_env()
    try:
        await apply_setup(client, steps)
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m activities.providers.hantera", description="Hantera provider tools"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("setup", help="the one-time Hantera setup of this service")
    setup.add_argument("--apply", action="store_true", help="apply it with the configured client")
    args = parser.parse_args(argv)
    steps = setup_plan(load_vendor_settings(HanteraSettings), Settings().customer_number_prefix)
    if args.apply:
        asyncio.run(_apply_from_env(steps))
    else:
        for number, step in enumerate(steps, 1):
            _print_step(number, step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _email_rule(email_canonical: str) -> None:
    """Customers are found by a graph filter on the email: an address that cannot be quoted in
    one is refused before the registration creates anything."""
    try:
        filter_literal(email_canonical)
    except InvalidRequest:
        raise ValueError(
            "cannot be used with the hantera provider (quote, backslash or control character)"
        ) from None


def _client(resources: Resources) -> HanteraClient:
    """One client (connection pool, token cache) for every role that uses Hantera."""
    return resources.shared("hantera", HanteraClient.from_env)


SPEC = ProviderSpec(
    name="hantera",
    identity=lambda resources: _client(resources).identity,
    customers=lambda resources: _client(resources).customers,
    mail=lambda resources: _client(resources).mail,
    capabilities=HanteraIdentity.capabilities,
    env_prefix=ENV_PREFIX,
    email_rule=_email_rule,
    listable_leftovers=True,
)
