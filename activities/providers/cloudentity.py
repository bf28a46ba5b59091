"""Cloudentity Identity Pools as the identity provider, with Cloudentity's own activation codes.

Cloudentity serves the identity role only: it keeps no customer records and has no general mail
API, so customers and mail come from other providers (``SPEC`` declares identity alone, and the
registry refuses ``cloudentity`` for another role at start-up).

Follows the custom-registration tutorial (seed 004) on the system API (``identitysystem``
Swagger, basePath ``/api/identity/{tenant}``), with the "custom activation message" path of its
steps 14-20:

* Token: ``POST {base}/{tenant}/system/oauth2/token``, client credentials, scopes ``identity
  identity_self_registration``, cached by the shared ``ClientCredentialsToken``.
* ``find_principal``: ``POST .../pools/{ipID}/users/by_key`` ``{identifier}`` (404: none).
* ``create_principal``: ``POST .../pools/{ipID}/users`` (``systemCreateUser``) with status
  ``new``, the workflow's user id, the email identifier, an unverified email address, the password
  credential, the name in ``payload`` and our pending mark in ``metadata``; ``X-Idempotency-Key``
  (derived from the user id) makes Cloudentity answer a retry within its minute as the first, and
  a later retry meets the id it created (409), which is then read back and kept.
* ``new_code``: ``POST .../pools/{ipID}/user/code/generate`` (``generateCodeForUser``, type
  ``activation``): Cloudentity answers the code (our mail provider sends it) and the user's
  earlier activation code stops working.
* ``confirm_code``: ``POST .../users/{userID}/activate`` (``activateSelfRegisteredUser``):
  Cloudentity checks the code, marks the address verified and the user ``active``. Its brute-force
  429 is ``TooManyAttempts`` (never retried).
* ``activate_principal``: ``PUT .../users/{userID}`` (``systemUpdateUser``) under ``If-Match`` with
  the version the workflow read (412: ``ConcurrentModification``): status ``active``, the customer
  id and number in ``metadata``, our pending mark dropped. After a staff approval (no code was
  confirmed) the address is first marked verified (``systemUpdateVerifiableAddress``), so the user
  ends as a confirmed code leaves it.
* ``undo_principal``: ``DELETE .../users/{userID}`` (``systemDeleteUser``; 404 counts as done).

``Principal.active`` is "the registration completed": status ``active`` and no pending mark. A
user Cloudentity activated on a code keeps the mark until ``activate_principal`` links it, so the
workflow's activation step still runs for it. An active user without our mark (created by staff,
or another flow) is an account: the registration is answered as for an email with an account.

ASSUMPTIONS, each in one place: the code format (``CloudentitySettings.code_length``: the pool's
``otp_settings.activation.length``; digits); a refused code is answered 400 or 422
(``confirm_code``); the metadata keys (``METADATA_*``, which the pool's metadata schema must allow:
docs/providers/cloudentity.md).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from temporalio import activity

from activities.errors import (
    ConcurrentModification,
    Conflict,
    InvalidRequest,
    NotFound,
    ProviderError,
    TooManyAttempts,
)
from activities.providers.http import ClientCredentialsToken, Vendor, VendorHttp, json_describer
from activities.providers.settings import VendorSettings, load_vendor_settings
from activities.providers.spec import ProviderSpec, Resources
from activities.roles import CodeOwner, IdentityCapabilities, NewPrincipal, Principal

log = logging.getLogger(__name__)

ENV_PREFIX = "REGISTRATION_CLOUDENTITY_"
SCOPES = "identity identity_self_registration"
"""What the tutorial's client requests (step 2): ``identity`` for the user endpoints,
``identity_self_registration`` for ``generateCodeForUser``."""
DEFAULT_CODE_LENGTH = 8
"""ASSUMPTION: the length of Cloudentity's activation codes when the pool's OTP settings do not
say otherwise (digits; the pool's ``otp_settings.activation.length``). Neither the Swagger file
nor the tutorial states the default: set ``REGISTRATION_CLOUDENTITY_CODE_LENGTH`` to the pool's."""
METADATA_PENDING = "registration_pending"
"""Metadata set by ``create_principal``, dropped by ``activate_principal``: the user is a
registration's, not yet completed (so a new registration of the email may replace it)."""
METADATA_REGISTRATION = "registration_id"
"""The creating registration's workflow id (``activity.info().workflow_id``), for support."""
METADATA_CUSTOMER_ID = "customer_id"
METADATA_CUSTOMER_NUMBER = "customer_number"
REFUSED_CODE = (400, 422)
"""ASSUMPTION: how ``activateSelfRegisteredUser`` answers a wrong or expired code (the Swagger
file lists 400, 401, 404, 412, 422 and 429; 401 is our token, 429 the brute-force lock)."""
CLOUDENTITY = Vendor(
    "Cloudentity",
    auth_hint=f" (check {ENV_PREFIX}CLIENT_ID/CLIENT_SECRET/TENANT and that the client, in the"
    f" System workspace, may have the scopes {SCOPES!r})",
    describe=json_describer(("error", "details"), ("error_code",)),
)
"""Error bodies ``{status_code, error, error_code, details}``; the shared status mapping fits
(409 ``Conflict``, 412 ``ConcurrentModification``, 400/422 ``InvalidRequest``, 429/5xx retryable),
except for the code check's 429 (``confirm_code``)."""


def code_pattern(length: int) -> str:
    return f"[0-9]{{{length}}}"


class CloudentitySettings(VendorSettings):
    """``REGISTRATION_CLOUDENTITY_*``; the required ones are checked when the client is built.
    ``base_url`` is the host root, e.g. ``https://<tenant>.<region>.authz.cloudentity.io``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    base_url_example: ClassVar[str] = "https://<tenant>.<region>.authz.cloudentity.io"
    base_url_host_root: ClassVar[bool] = True
    required_by: ClassVar[str] = "identity"

    tenant: str | None = None
    pool_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    code_length: int = Field(DEFAULT_CODE_LENGTH, ge=4, le=32)
    """The pool's activation code length (``otp_settings.activation.length``): the codes are
    that many digits, and ``REGISTRATION_CODE_PATTERN`` must be ``[0-9]{<length>}``."""

    @field_validator("tenant", "pool_id")
    @classmethod
    def _segment(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise ValueError("must be an id (letters, digits, - and _)")
        return value


def idempotency_key(user_id: str) -> str:
    """``X-Idempotency-Key`` of a user's create: 32-255 characters, the same for every retry."""
    return hashlib.sha256(f"systemCreateUser\x00{user_id}".encode()).hexdigest()


class CloudentityClient:
    """The connection pool and the client token of one pool's system API."""

    def __init__(self, settings: CloudentitySettings) -> None:
        self.settings = settings
        base_url = settings.required("base_url")
        tenant = settings.required("tenant")
        pool = settings.required("pool_id")
        client_id = settings.required("client_id")
        client_secret = settings.required("client_secret")
        self._http = VendorHttp(CLOUDENTITY, base_url, **settings.http_options())
        self._token = ClientCredentialsToken(
            self._http, f"/{tenant}/system/oauth2/token", client_id, client_secret, scope=SCOPES
        )
        self.pool_path = f"/api/identity/{tenant}/system/pools/{pool}"
        self.identity = CloudentityIdentity(self)

    @classmethod
    def from_env(cls) -> CloudentityClient:
        return cls(load_vendor_settings(CloudentitySettings))

    async def aclose(self) -> None:
        await self._http.aclose()

    def path(self, *segments: str) -> str:
        """A path under the pool, each segment quoted (an id cannot climb out: ``../``)."""
        return "/".join([self.pool_path, *(quote(s, safe="") for s in segments)])

    async def call(
        self,
        method: str,
        path: str,
        *,
        allow: Collection[int] = (),
        redact: Sequence[str] = (),
        typed: Mapping[str, type[ProviderError]] | None = None,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        return await self._http.request(
            method,
            path,
            auth=self._token,
            allow=allow,
            redact=redact,
            typed=typed,
            idempotent=idempotent,
            **kwargs,
        )


def _email_of(doc: Mapping[str, Any]) -> str:
    for item in doc.get("identifiers") or ():
        if isinstance(item, dict) and item.get("type") == "email" and item.get("identifier"):
            return str(item["identifier"])
    for item in doc.get("verifiable_addresses") or ():
        if isinstance(item, dict) and item.get("type") == "email" and item.get("address"):
            return str(item["address"])
    return ""


def _principal(response: httpx.Response) -> Principal:
    doc = CLOUDENTITY.json_object(response)
    etag = response.headers.get("ETag")
    if not doc.get("id") or not etag:
        path = response.request.url.path
        raise InvalidRequest(f"Cloudentity {path}: the user has no id or no ETag")
    metadata = doc.get("metadata") or {}
    payload = doc.get("payload") or {}
    pending = metadata.get(METADATA_PENDING) is True
    customer_id = metadata.get(METADATA_CUSTOMER_ID)
    customer_number = metadata.get(METADATA_CUSTOMER_NUMBER)
    return Principal(
        id=str(doc["id"]),
        email=_email_of(doc),
        name=str(payload.get("name") or ""),
        active=doc.get("status") == "active" and not pending,
        version=etag,
        customer_id=str(customer_id) if customer_id else None,
        customer_number=str(customer_number) if customer_number else None,
        replaceable=pending and doc.get("status") in ("new", "active") and not customer_id,
    )


def _unverified_email(doc: Mapping[str, Any], email: str) -> bool:
    return any(
        isinstance(a, dict)
        and str(a.get("address", "")).lower() == email.lower()
        and a.get("verified") is not True
        for a in doc.get("verifiable_addresses") or ()
    )


class CloudentityIdentity:
    """``IdentityProvider`` and ``CodeIssuer`` on one identity pool's users."""

    in_process = False

    def __init__(self, client: CloudentityClient) -> None:
        self._client = client
        self.capabilities = IdentityCapabilities(
            code=CodeOwner.PROVIDER, code_pattern=code_pattern(client.settings.code_length)
        )

    async def aclose(self) -> None:
        """Nothing to do: the ``CloudentityClient`` owns the connections."""

    async def find_principal(self, email_canonical: str) -> Principal | None:
        """``systemGetUserByKey`` by the email identifier (our users carry it from their create;
        an unverified address alone finds nothing there)."""
        response = await self._client.call(
            "POST",
            self._client.path("users", "by_key"),
            json={"identifier": email_canonical},
            allow=(404,),
            idempotent=True,  # a read
        )
        return None if response.status_code == 404 else _principal(response)

    async def get_principal(self, principal_id: str) -> Principal | None:
        response = await self._client.call(
            "GET", self._client.path("users", principal_id), allow=(404,)
        )
        return None if response.status_code == 404 else _principal(response)

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        """``systemCreateUser``, status ``new``, under the workflow's id; retry-safe.

        Repeated in place after a transient failure with the same ``X-Idempotency-Key``: within
        Cloudentity's minute the replay answers as the first create. Later (a Temporal retry) the
        id exists: 409, and the user is read back and kept if it is this email's and still ours;
        a 409 for a user that is not under this id means the email is taken: ``Conflict``.
        """
        metadata: dict[str, Any] = {METADATA_PENDING: True}
        if activity.in_activity() and activity.info().workflow_id:
            metadata[METADATA_REGISTRATION] = activity.info().workflow_id
        body = {
            "id": new.id,
            "status": "new",
            "identifiers": [{"identifier": new.email_canonical, "type": "email"}],
            "verifiable_addresses": [
                {
                    "address": new.email_canonical,
                    "type": "email",
                    "status": "active",
                    "verified": False,
                }
            ],
            "credentials": [{"type": "password", "password": password}],
            "payload": {"name": new.name},
            "metadata": metadata,
        }
        try:
            response = await self._client.call(
                "POST",
                self._client.path("users"),
                json=body,
                headers={"X-Idempotency-Key": idempotency_key(new.id)},
                redact=(password,),
                idempotent=True,
            )
        except Conflict:
            existing = await self.get_principal(new.id)
            if existing is None:
                raise
            if existing.email.lower() != new.email_canonical:
                raise Conflict(f"user {new.id} already exists with another email") from None
            log.info("user %s: created by an earlier try", new.id)
            return existing
        return _principal(response)

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        """The create's cost without its effect: one read of the (absent) id. Cloudentity's own
        password hashing at a create cannot be mirrored without creating something."""
        await self.get_principal(new.id)

    async def new_code(self, principal_id: str) -> str:
        """``generateCodeForUser`` (type ``activation``): the new code; the old one stops
        working. Repeated in place: the newest answer carries the code that works."""
        response = await self._client.call(
            "POST",
            self._client.path("user", "code", "generate"),
            json={"type": "activation", "userID": principal_id},
            idempotent=True,
        )
        code = CLOUDENTITY.json_object(response).get("code")
        if not isinstance(code, str) or not code:
            raise InvalidRequest(f"Cloudentity code for user {principal_id}: no code answered")
        return code

    async def confirm_code(self, principal_id: str, code: str) -> bool:
        """``activateSelfRegisteredUser``: ``True`` if Cloudentity took the code (it marked the
        address verified and the user active). Its brute-force 429 is ``TooManyAttempts``: the
        caller is told, and nothing retries. A refused code (``REFUSED_CODE``) is ``False``,
        unless the user is active with our pending mark: then an earlier try of this very check
        went through and its answer was lost (Cloudentity refuses activating a user twice)."""
        response = await self._client.call(
            "POST",
            self._client.path("users", principal_id, "activate"),
            json={"code": code},
            allow=(*REFUSED_CODE, 429),
            redact=(code,),
        )
        if response.status_code == 429:
            raise TooManyAttempts(f"Cloudentity user {principal_id}: too many wrong codes")
        if response.status_code in REFUSED_CODE:
            current = await self._client.call(
                "GET", self._client.path("users", principal_id), allow=(404,)
            )
            if current.status_code == 404:
                raise NotFound(f"Cloudentity user {principal_id} no longer exists")
            doc = CLOUDENTITY.json_object(current)
            metadata = doc.get("metadata") or {}
            return doc.get("status") == "active" and metadata.get(METADATA_PENDING) is True
        return True

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        """``systemUpdateUser`` under ``If-Match: expected_version``: status ``active``, the
        customer in ``metadata``, the pending mark dropped (412: ``ConcurrentModification``,
        which the activity reads again). An address still unverified (a staff approval: no code
        was confirmed) is marked verified first, under the same version."""
        path = self._client.path("users", principal_id)
        read = await self._client.call("GET", path, allow=(404,))
        if read.status_code == 404:
            raise NotFound(f"Cloudentity user {principal_id} no longer exists")
        doc = CLOUDENTITY.json_object(read)
        if read.headers.get("ETag") != expected_version:
            raise ConcurrentModification(f"Cloudentity user {principal_id} changed")
        version = expected_version
        email = _email_of(doc)
        if _unverified_email(doc, email):
            verified = await self._client.call(
                "POST",
                self._client.path("users", principal_id, "addresses", "update"),
                json={"address": email, "status": "active", "verified": True},
                headers={"If-Match": version},
                idempotent=True,  # the same result again; a repeat of a done one is a 412
            )
            version = verified.headers.get("ETag") or version
        metadata = {
            k: v
            for k, v in (doc.get("metadata") or {}).items()
            if k not in (METADATA_PENDING, METADATA_CUSTOMER_ID, METADATA_CUSTOMER_NUMBER)
        }
        if customer_id is not None:
            metadata[METADATA_CUSTOMER_ID] = customer_id
        if customer_number is not None:
            metadata[METADATA_CUSTOMER_NUMBER] = customer_number
        response = await self._client.call(
            "PUT",
            path,
            json={"status": "active", "metadata": metadata},
            headers={"If-Match": version},
        )
        return _principal(response)

    async def undo_principal(self, principal_id: str) -> bool:
        response = await self._client.call(
            "DELETE", self._client.path("users", principal_id), allow=(404,)
        )
        return response.status_code != 404


def _client(resources: Resources) -> CloudentityClient:
    return resources.shared("cloudentity", CloudentityClient.from_env)


SPEC = ProviderSpec(
    name="cloudentity",
    identity=lambda resources: _client(resources).identity,
    capabilities=IdentityCapabilities(
        code=CodeOwner.PROVIDER, code_pattern=code_pattern(DEFAULT_CODE_LENGTH)
    ),
    env_prefix=ENV_PREFIX,
    listable_leftovers=False,
)
"""Identity only. ``capabilities`` here is the default pool's; the identity object carries the
configured ``code_length`` (the worker checks ``REGISTRATION_CODE_PATTERN`` against that one)."""
