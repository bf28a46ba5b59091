"""Inputs and outputs of the activities: one model per call, recorded in workflow history.

Nothing here holds a secret in clear: passwords and codes stay sealed, and an issued activation
code is represented only by its keyed HMAC.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from activities.roles import (
    Customer,
    CustomerLink,
    IdentityCapabilities,
    NewCustomer,
    NewPrincipal,
    Principal,
)
from workflows.models import CodeSubmission


class _Model(BaseModel):
    """Validation errors name the field but never echo its value (a sealed password, a digest)."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)


class ProviderProfile(_Model):
    """What the workflow follows: which roles run in this process (local activities) or call out
    (regular ones), and the identity provider's shape. Asked once per registration and recorded
    in its history, so a replay, or a worker restarted with other providers, keeps both."""

    identity_in_process: bool
    customers_in_process: bool
    mail_in_process: bool
    identity: IdentityCapabilities = IdentityCapabilities()

    @property
    def activation_in_process(self) -> bool:
        """Whether the activation's steps (customer, then principal) all run as local activities,
        i.e. within one workflow task, whose commands the server receives together: then they
        run as one activity (``activities/activation.py``), and nobody could see ``activating``."""
        return self.identity_in_process and self.customers_in_process


class EmailLookup(_Model):
    email_canonical: str


class CreatePrincipalInput(_Model):
    principal: NewPrincipal
    sealed_password: str = Field(repr=False)


class PrincipalRef(_Model):
    principal_id: str


class ActivatePrincipalInput(_Model):
    principal_id: str
    customer: Customer | None = None
    """The customer to link; ``None`` for a one-record provider (it links its own part)."""
    login: CreatePrincipalInput | None = None
    """For a provider whose logins are created only once the email is proven
    (``LoginCreated.ACTIVATION``): the login to create, active."""


class LinkAndActivateInput(_Model):
    """Step 5 in one activity (``activities/activation.py``): the customer to link or create,
    and the principal to activate with the link."""

    customer: NewCustomer
    principal: ActivatePrincipalInput
    """Its ``customer`` is left out: it is the one just linked or created."""
    one_record: bool = False
    """The identity provider's login is the customer record: no customers-role call."""


class LinkedActivation(_Model):
    link: CustomerLink
    principal: Principal


class CustomerRef(_Model):
    customer_id: str


class IssueActivationInput(_Model):
    registration_id: str
    principal_id: str
    """The login the code is for: a provider that makes its own codes makes it for this login."""
    sequence: int
    """1 for the first code, +1 per resend; part of the HMAC and of the mail's idempotency key."""
    email: str
    name: str
    locale: str | None = None
    expires_at: datetime


NO_CODE = "no code was issued"
"""``code_digest`` when nothing was issued (an email that has an account): no HMAC (64 hex
digits) equals it, so every submission is a wrong code, checked by the same activity."""


class IssuedActivation(_Model):
    """What the workflow keeps of an issued code: keyed HMACs only, never the code itself."""

    sequence: int
    code_digest: str
    token_digest: str | None = None


class VerifyActivationInput(_Model):
    registration_id: str
    issued: IssuedActivation
    submission: CodeSubmission
    principal_id: str | None = None
    """Set when the identity provider has the last word on the code (``CodeOwner.PROVIDER``):
    a code that meets our digest is then confirmed there."""


class NoticeInput(_Model):
    email: str
    name: str
    locale: str | None = None
    customer_number: str | None = None
    sequence: int = 1
    """Which notice of its kind this is for the registration: a resent one is a new mail."""
