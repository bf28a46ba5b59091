"""Typed provider errors.

They are Temporal ``ApplicationError``s whose ``type`` is the class name, so the workflow (and the
UI) can tell a conflict from a missing record. Errors that a retry cannot fix are non-retryable;
``ProviderUnavailable`` is the one retryable kind, optionally carrying the server's Retry-After.
Their messages quote a server's reply only through ``scrub``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import ClassVar

from temporalio.exceptions import ApplicationError

_EMAIL = re.compile(r"[^\s'\"<>(),;:@]+@[^\s'\"<>(),;:@]+")


def scrub(text: str, redact: Iterable[str] = ()) -> str:
    """Remove secrets and email addresses from a provider's reply, then shorten: error messages
    go into workflow history, which is not encrypted, and name ids, never emails."""
    for secret in redact:
        if secret:
            text = text.replace(secret, "***")
    return _EMAIL.sub("<email>", text)[:200]


class ProviderError(ApplicationError):
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, next_retry_delay: timedelta | None = None) -> None:
        super().__init__(
            message,
            type=type(self).__name__,
            non_retryable=not self.retryable,
            next_retry_delay=next_retry_delay,
        )


class InvalidRequest(ProviderError):
    """The provider rejected the data (HTTP 400/422): sending it again cannot help."""


class PasswordRejected(InvalidRequest):
    """The password breaks the password policy; the message names the rule."""


class NotFound(ProviderError):
    """The record is gone (HTTP 404)."""


class Conflict(ProviderError):
    """A uniqueness rule was broken (HTTP 409), e.g. the email belongs to another principal."""


class ConcurrentModification(Conflict):
    """The record changed since it was read (etag/version mismatch, HTTP 412)."""


class AccountExists(ProviderError):
    """The provider holds an account for the email that a lookup could not see (an imported
    customer without a login, a login of another kind) and that this registration may not take
    over: the registration is answered as for an email with an account, and its owner told."""


class TooManyAttempts(ProviderError):
    """The provider's own brute-force protection refused a code check (HTTP 429 on a code):
    the caller is told too many attempts; retrying would only prolong the lock."""


class ProviderUnavailable(ProviderError):
    """Transient: rate limited, 5xx or a transport error. Retried with backoff."""

    retryable = True


class ConfigurationError(ValueError):
    """The service is misconfigured; the message names the setting. Raised at start-up."""
