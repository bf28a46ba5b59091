"""The three provider roles as small interfaces, and the provider-neutral records they exchange.

A provider implements one role (identity, customers or mail); the worker picks one per role from
the settings (``activities/providers/__init__.py``), so new vendors plug in without touching the
workflow. ``in_process`` tells the workflow whether a role's calls are millisecond-fast local work
(run as local activities, saving server round trips) or remote calls (regular activities).
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from activities.errors import Conflict, NotFound


class _Record(BaseModel):
    """Validation errors name the field but never echo its value (personal data from a provider)."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)


class Principal(_Record):
    """A login identity at the identity provider."""

    id: str
    email: str
    name: str
    active: bool
    version: str
    """Opaque concurrency token (etag or row version) for guarded updates."""
    customer_id: str | None = None
    replaceable: bool = True
    """Read when not ``active``: inactive the way a registration leaves it (created, never
    activated), so a new registration of the email may replace it. ``False`` for an inactive
    principal that something else owns (created by staff or another flow), which a stranger's
    registration must not delete. True by default: what every inactive principal was taken for
    before the field existed, so recorded histories replay unchanged."""


def activation_target(
    principal: Principal | None, principal_id: str, customer_id: str
) -> Principal:
    """The principal to activate for ``customer_id``; if it is already active, that activation
    went through before (a retry). ``NotFound`` or ``Conflict`` if it cannot be activated."""
    if principal is None:
        raise NotFound(f"principal {principal_id} no longer exists")
    if principal.active and principal.customer_id != customer_id:
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


class IdentityProvider(Protocol):
    in_process: bool

    async def find_principal(self, email_canonical: str) -> Principal | None: ...

    async def get_principal(self, principal_id: str) -> Principal | None: ...

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        """Create an inactive principal; creating the same id again returns it unchanged."""
        ...

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        """Spend what ``create_principal`` would, and create nothing. Called for an email that
        already has an account, so that its first mail goes out no sooner than a new email's
        (no account enumeration by timing)."""
        ...

    async def activate_principal(
        self, principal_id: str, customer_id: str, customer_number: str, expected_version: str
    ) -> Principal:
        """Activate and link to the customer, only if ``expected_version`` is still current
        (else ``ConcurrentModification``); ``NotFound`` if the principal is gone."""
        ...

    async def delete_principal(self, principal_id: str) -> bool:
        """Delete; ``False`` if it was already gone (idempotent)."""
        ...

    async def aclose(self) -> None: ...


class CustomerProvider(Protocol):
    in_process: bool

    async def find_customer(self, email_canonical: str) -> Customer | None: ...

    async def create_customer(self, new: NewCustomer) -> Customer:
        """Create with a generated customer number; creating the same id again returns it."""
        ...

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        """The customer with ``new``'s email (``created=False``), else a new one from ``new``.

        One call, so that no customer can appear between the lookup and the create, and retry-
        safe: the customer an earlier attempt created for ``new.id`` comes back ``created=True``.
        """
        ...

    async def delete_customer(self, customer_id: str) -> bool:
        """Delete; ``False`` if it was already gone (idempotent)."""
        ...

    async def aclose(self) -> None: ...


class MailProvider(Protocol):
    in_process: bool

    async def send(self, message: MailMessage) -> None: ...

    async def aclose(self) -> None: ...


class OneStepActivation(Protocol):
    """Step 5 in one transaction, where identity and customers live in one store (the local
    provider's SQLite file): the customer linked or created and the principal activated with the
    link, with the checks of the two separate calls, committed together. A failed activation then
    leaves no customer behind, and the step costs one commit instead of two."""

    async def link_customer_and_activate(
        self, principal_id: str, customer: NewCustomer
    ) -> tuple[CustomerLink, Principal]: ...
