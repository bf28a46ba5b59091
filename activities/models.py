"""Inputs and outputs of the activities: one model per call, recorded in workflow history.

Nothing here holds a secret in clear: passwords and codes stay sealed, and an issued activation
code is represented only by its keyed HMAC.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from activities.roles import CustomerLink, NewCustomer, NewPrincipal, Principal
from workflows.models import CodeSubmission


class _Model(BaseModel):
    """Validation errors name the field but never echo its value (a sealed password, a digest)."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)


class ProviderProfile(_Model):
    """Which roles run in this process (local activities) and which call out (regular ones)."""

    identity_in_process: bool
    customers_in_process: bool
    mail_in_process: bool
    customer_in_one_step: bool = False
    """The worker links or creates the customer with one activity, and does not upsert the
    ``activating`` status when the activation runs in-process (nobody could see it: it reached
    the server in the same workflow task as the final status). Recorded in history with the rest
    of the profile: registrations recorded before it existed lack the field and replay the old
    two-step path, without a patch marker (and the search-attribute upsert a patch costs)."""
    existing_account_answers_as_pending: bool = False
    """For an email that has an active account, the workflow mails its owner and then answers
    code submissions and resends as a pending registration would, until the activation window
    ends: not only the first answer but every later one is the same as for a new email.
    Registrations recorded before it existed end at once (same versioning as above)."""
    activation_in_one_step: bool = False
    """Identity and customers both run in this process, and this worker links or creates the
    customer and activates the principal in one local activity (``activities/activation.py``)
    instead of two. Registrations recorded before it existed take two (same versioning)."""
    existing_account_in_equal_time: bool = False
    """An email with an account spends what creating its principal would (``decoy_create``)
    before its owner's first mail, and every registration's first resend throttle counts from
    its start, not from its first mail: neither the time of the first mail nor
    ``next_resend_at`` tells that the account exists (the create's Argon2id hash took 20 to 70
    ms). Registrations recorded before it existed keep the old timing (same versioning)."""

    @property
    def activation_in_process(self) -> bool:
        """Whether the activation's steps (customer, then principal) all run as local activities,
        i.e. within one workflow task, whose commands the server receives together."""
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
    customer_id: str
    customer_number: str


class LinkAndActivateInput(_Model):
    """Step 5 in one activity (``activities/activation.py``): the customer to link or create,
    and the principal to activate with the link."""

    principal_id: str
    customer: NewCustomer


class LinkedActivation(_Model):
    link: CustomerLink
    principal: Principal


class CustomerRef(_Model):
    customer_id: str


class IssueActivationInput(_Model):
    registration_id: str
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


class NoticeInput(_Model):
    email: str
    name: str
    locale: str | None = None
    customer_number: str | None = None
    sequence: int = 1
    """Which notice of its kind this is for the registration: a resent one is a new mail."""
