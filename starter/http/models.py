"""The bodies of the API's requests and answers. Requests refuse unknown fields; the password is
a ``SecretStr`` from the moment it is parsed, so no repr, log line or error shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from starter.client import RECEIPT_MESSAGE


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class RegistrationRequest(_Body):
    email: str = Field(max_length=320, examples=["alice@example.com"])
    name: str = Field(max_length=400, examples=["Alice Andersson"])
    password: SecretStr = Field(
        max_length=4096,
        description="Sealed at once; held to the password policy (length, blocklist).",
    )
    phone: str | None = Field(None, max_length=64, examples=["+46701234567"])
    locale: str | None = Field(None, max_length=35, examples=["sv-SE"])
    profile: dict[str, str] = Field(
        default_factory=dict, description="Customer fields (up to 32), stored with a new customer."
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, description="The caller's own (up to 32), shown by the status."
    )


class ActivationRequest(_Body):
    email: str = Field(max_length=320)
    code: str = Field(max_length=200, description="The mailed code, or the link's token.")


class ResendRequest(_Body):
    email: str = Field(max_length=320)


class ApprovalRequest(_Body):
    operator: str = Field(max_length=200)
    reason: str = Field(max_length=2000)


class CancelRequest(_Body):
    reason: str = Field("", max_length=2000)


class Accepted(BaseModel):
    """The same answer for every registration request: for a new address, a pending one and
    one that already has an account."""

    message: str = RECEIPT_MESSAGE


class Activated(BaseModel):
    outcome: Literal["activated"] = "activated"


class ResendSent(BaseModel):
    outcome: Literal["sent"] = "sent"
    resends_left: int
    next_resend_at: datetime | None = None


class StaffAccepted(BaseModel):
    action: Literal["approve", "cancel"]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
