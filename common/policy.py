"""The bounds of a registration's policy, declared once for the two models that hold to them.

``workflows.models.RegistrationPolicy``, the limits each registration copies at start, declares
its fields with these types; so does ``common.settings.Settings`` for the configured policy, so
that a value every registration would refuse (a zero TTL, say) stops a process at start-up, named
by its variable. They live here because ``common`` never imports ``workflows``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field


def _ttl_in_bounds(ttl: timedelta) -> timedelta:
    if not timedelta(minutes=1) <= ttl <= timedelta(days=30):
        raise ValueError("must be between 1 minute and 30 days")
    return ttl


ActivationTtl = Annotated[timedelta, AfterValidator(_ttl_in_bounds)]
"""How long a code (or link) can be used: 1 minute to 30 days."""
Attempts = Annotated[int, Field(ge=1)]
"""Wrong codes allowed (per code, or in all)."""
Resends = Annotated[int, Field(ge=0)]
"""New codes a registration may ask for."""


def _window_in_bounds(window: timedelta) -> timedelta:
    if not timedelta(minutes=1) <= window <= timedelta(days=30):
        raise ValueError("must be between 1 minute and 30 days")
    return window


FailureWindow = Annotated[timedelta, AfterValidator(_window_in_bounds)]
"""How long an email's wrong codes count across its registrations: 1 minute to 30 days."""
CustomerNumberPrefix = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9-]{0,11}$")]
"""What a new customer's number starts with (``CUST``)."""
