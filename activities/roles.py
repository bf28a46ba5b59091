"""The three provider roles as small interfaces, and the provider-neutral records they exchange.

A provider implements one role (identity, customers or mail); the worker picks one per role from
the settings (``activities/providers/__init__.py``), so new vendors plug in without touching the
workflow. ``in_process`` tells the workflow whether a role's calls are millisecond-fast local work
(run as local activities, saving server round trips) or remote calls (regular activities).

Vendors differ in shape; an identity provider declares its shape in ``IdentityCapabilities``
and the workflow follows the declaration, never a vendor's name.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from activities.errors import Conflict, InvalidRequest, NotFound
from workflows.models import CODE_DIGITS

OUR_CODE_PATTERN = f"[0-9]{{{CODE_DIGITS}}}"


class _Record(BaseModel):
    """Validation errors name the field but never echo its value (personal data from a provider)."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)


class LoginCreated(StrEnum):
    """When the login exists at the provider."""

    SIGNUP = "signup"
    """Created inactive at sign-up, activated once the email is proven."""
    ACTIVATION = "activation"
    """Created (active) only once the email is proven: for a provider that has no inactive login
    or cannot delete one. Until then the password stays sealed in the workflow."""


class LoginUndo(StrEnum):
    """What a compensation does to a login this registration created."""

    DELETE = "delete"
    DEACTIVATE = "deactivate"
    """The provider has no delete: the login is made unusable and left for its own clean-up."""


class CodeOwner(StrEnum):
    """Who makes the activation code and has the last word on it."""

    OURS = "ours"
    """A CSPRNG code of ours, checked against its keyed HMAC (``activities/codes.py``)."""
    PROVIDER = "provider"
    """The provider generates the code (we mail it) and verifies it at activation; our HMAC
    check and limits still run in front of it (``CodeIssuer``)."""


class IdentityCapabilities(_Record):
    """An identity provider's shape. Recorded in each registration's history (with the
    ``ProviderProfile``), so a running registration keeps the shape it started with."""

    login_created: LoginCreated = LoginCreated.SIGNUP
    one_record: bool = False
    """The login and the customer are one record at the provider: it creates the customer part
    with the login and returns its id and number on activation; no customers-role call is made,
    and the customers provider must be the same provider."""
    login_undo: LoginUndo = LoginUndo.DELETE
    code: CodeOwner = CodeOwner.OURS
    code_pattern: str = OUR_CODE_PATTERN
    """The format of the activation codes (a regular expression), so that the client refuses a
    mistyped code before it costs an attempt: ``REGISTRATION_CODE_PATTERN`` must say the same
    (the worker checks at start-up)."""


class Principal(_Record):
    """A login identity at the identity provider."""

    id: str
    email: str
    name: str
    active: bool
    version: str
    """Opaque concurrency token (etag or row version) for guarded updates."""
    customer_id: str | None = None
    customer_number: str | None = None
    """Set by a one-record provider (``IdentityCapabilities.one_record``): the customer part."""
    linked_existing_customer: bool = False
    """A one-record provider bound the login to a customer record that existed before (an
    imported customer): compensation must not remove that record."""
    replaceable: bool = False
    """Read when not ``active``: inactive the way a registration leaves it (created, never
    activated), so a new registration of the email may replace it. ``False`` for an inactive
    principal that something else owns (created by staff or another flow), which a stranger's
    registration must not delete."""


def activation_target(
    principal: Principal | None, principal_id: str, customer_id: str | None
) -> Principal:
    """The principal to activate for ``customer_id``; if it is already active, that activation
    went through before (a retry). ``NotFound`` or ``Conflict`` if it cannot be activated."""
    if principal is None:
        raise NotFound(f"principal {principal_id} no longer exists")
    if principal.active and customer_id is not None and principal.customer_id != customer_id:
        raise Conflict(f"principal {principal_id} was activated for another customer")
    return principal


class NewPrincipal(_Record):
    id: str
    """Chosen by the workflow, so a retried create is idempotent."""
    email: str
    email_canonical: str
    name: str
    phone: str | None = None
    locale: str | None = None
    tenant: str | None = None
    customer: NewCustomer | None = None
    """The customer part, for a one-record provider (``IdentityCapabilities.one_record``); the
    workflow always sets it."""
    link: Customer | None = None
    """For a login created at activation (``LoginCreated.ACTIVATION``) beside a separate
    customer record: the customer to link it to."""


class Customer(_Record):
    """A customer record on the commerce side."""

    id: str
    number: str
    email: str
    name: str | None = None


class NewCustomer(_Record):
    id: str
    """Chosen by the workflow; providers that assign their own ids may ignore it."""
    email: str
    email_canonical: str
    name: str
    phone: str | None = None
    number_prefix: str = "CUST"
    tenant: str | None = None
    profile: dict[str, str] = Field(default_factory=dict)
    """The registration's profile fields (``RegistrationInput.profile``): stored with a customer
    the registration creates; a linked customer keeps the record it had."""


class CustomerLink(_Record):
    """The customer a registration links its principal to, and whether the registration created
    it (only then may a compensation delete it)."""

    customer: Customer
    created: bool


def customer_part(principal: Principal) -> CustomerLink:
    """The customer of a one-record provider's activated login (``IdentityCapabilities``)."""
    if principal.customer_id is None or principal.customer_number is None:
        raise InvalidRequest(f"principal {principal.id}: activated without its customer part")
    customer = Customer(
        id=principal.customer_id,
        number=principal.customer_number,
        email=principal.email,
        name=principal.name,
    )
    return CustomerLink(customer=customer, created=not principal.linked_existing_customer)


class MailMessage(_Record):
    """A rendered message. ``idempotency_key`` makes a retried send deliver it once."""

    to: str
    subject: str
    text: str
    html: str
    category: str
    idempotency_key: str
    dynamic: dict[str, str] = Field(default_factory=dict)
    redact: tuple[str, ...] = Field(default=(), repr=False)
    """The secrets in the bodies (the activation code, the link token): a provider whose error
    reply quotes the request must not carry them into an error, which lands in history."""


NewPrincipal.model_rebuild()


class IdentityProvider(Protocol):
    in_process: bool
    capabilities: IdentityCapabilities

    async def find_principal(self, email_canonical: str) -> Principal | None: ...

    async def get_principal(self, principal_id: str) -> Principal | None: ...

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        """Create the login; creating the same id again returns it unchanged. At sign-up
        (``LoginCreated.SIGNUP``) inactive; at activation (``LoginCreated.ACTIVATION``) active
        and linked to ``new.link``, or, for a one-record provider, to the customer part it
        creates (or an existing record for the email it binds to)."""
        ...

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        """Spend what ``create_principal`` would, and create nothing. Called for an email that
        already has an account, so that its first mail goes out no sooner than a new email's
        (no account enumeration by timing)."""
        ...

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        """Activate and link to the customer (``None`` for a one-record provider, which links
        its own customer part), only if ``expected_version`` is still current (else
        ``ConcurrentModification``); ``NotFound`` if the principal is gone."""
        ...

    async def undo_principal(self, principal_id: str) -> bool:
        """Compensation: delete, or deactivate (``IdentityCapabilities.login_undo``) a login this
        registration created; ``False`` if it was already gone (idempotent)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class CodeIssuer(Protocol):
    """The identity provider's own activation codes (``CodeOwner.PROVIDER``). A staff approval
    activates without a code: ``activate_principal`` then makes the login active (and the
    address verified) at the provider itself."""

    async def new_code(self, principal_id: str) -> str:
        """A new code for the login; the provider's earlier code stops working."""
        ...

    async def confirm_code(self, principal_id: str, code: str) -> bool:
        """Whether the provider accepts ``code`` (for most, accepting it also verifies the
        address); ``TooManyAttempts`` if the provider's own brute-force limit was hit."""
        ...


class CustomerProvider(Protocol):
    in_process: bool

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        """The customer with ``new``'s email (``created=False``), else a new one from ``new``.

        One call, so that no customer can appear between the lookup and the create, and retry-
        safe: the customer an earlier attempt created for ``new.id`` comes back ``created=True``.
        """
        ...

    async def undo_customer(self, customer_id: str) -> bool:
        """Compensation: delete (or, where the provider has no delete, deactivate) a customer
        this registration created; ``False`` if it was already gone (idempotent)."""
        ...

    async def aclose(self) -> None: ...


class MailProvider(Protocol):
    in_process: bool

    async def send(self, message: MailMessage) -> None: ...

    async def aclose(self) -> None: ...


class Leftover(_Record):
    """A record a registration created and may have left behind (``Leftovers``)."""

    id: str
    """What the provider's undo takes (``undo_principal`` or ``undo_customer``)."""
    email_canonical: str
    """Finds the registration: its workflow ID derives from the email (``common.identifiers``)."""
    registration: str | None = None
    """The workflow ID of the registration that created it, where the provider recorded one
    (it wins over the ID derived from the email)."""
    created_at: datetime | None = None
    """``None`` where the provider does not say (the record then counts as old enough)."""


class LeftoverPage(_Record):
    records: list[Leftover] = Field(default_factory=list)
    after: str | None = None
    """The cursor of the next page; ``None`` after the last one."""


@runtime_checkable
class Leftovers(Protocol):
    """An identity or customers provider that can list what registrations may have left behind
    (``ProviderSpec.listable_leftovers``), for the sweep (``workflows/sweep.py``) to judge
    against the registrations and undo through the role's own undo.

    An identity provider lists its *inactive* logins that registrations created; a customers
    provider the customers that registrations created and that no active login is linked to.
    Only records created before ``created_before``, ordered by a cursor that stays valid while
    records are deleted (an id), at most ``limit`` per page. It never lists a record that
    something other than a registration created (an imported customer, a login made by staff)."""

    async def list_leftovers(
        self, created_before: datetime, after: str | None, limit: int
    ) -> LeftoverPage: ...


class OneStepActivation(Protocol):
    """Step 5 in one transaction, where identity and customers live in one store (the local
    provider's SQLite file): the customer linked or created and the principal activated with the
    link, with the checks of the two separate calls, committed together. A failed activation then
    leaves no customer behind, and the step costs one commit instead of two."""

    async def link_customer_and_activate(
        self, principal_id: str, customer: NewCustomer
    ) -> tuple[CustomerLink, Principal]: ...
