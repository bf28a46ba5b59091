"""Builds the provider of each role from the settings.

Each role has a table of provider names to factories. An unknown name, or a provider whose own
settings are missing, stops the worker at start-up with a ``ConfigurationError`` naming the setting.
Providers that share a resource (the local identity and customers share one SQLite file) get it
from ``Resources``, which also closes everything on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from activities.errors import ConfigurationError
from activities.roles import CustomerProvider, IdentityProvider, MailProvider, OneStepActivation
from common.settings import Settings

T = TypeVar("T")


class Resources:
    """Shared, lazily created objects (one per key), closed with the providers."""

    def __init__(self, settings: Settings, stack: AsyncExitStack) -> None:
        self.settings = settings
        self._stack = stack
        self._shared: dict[str, Any] = {}

    def shared(self, key: str, make: Callable[[], T]) -> T:
        """One object per key for all roles (e.g. one SQLite directory, one HTTP client)."""
        if key not in self._shared:
            self._shared[key] = make()
            self.close_on_exit(self._shared[key])
        return self._shared[key]  # type: ignore[no-any-return]

    def close_on_exit(self, obj: object) -> None:
        closer = getattr(obj, "aclose", None)
        if closer is not None:
            self._stack.push_async_callback(closer)


def _local_directory(resources: Resources) -> Any:
    from activities.providers.local import LocalDirectory

    settings = resources.settings
    return resources.shared("local", lambda: LocalDirectory(settings.database_path))


def _hantera(resources: Resources) -> Any:
    """One client (connection pool, token cache) for every role that uses Hantera."""
    from activities.providers.hantera import HanteraClient

    return resources.shared("hantera", HanteraClient.from_env)


def _outbox(resources: Resources) -> MailProvider:
    from activities.providers.outbox import OutboxMail

    outbox = OutboxMail(resources.settings.outbox_path, resources.settings.mail_from)
    outbox.check_writable()
    return outbox


def _smtp(resources: Resources) -> MailProvider:
    from activities.providers.smtp import SmtpMail

    return SmtpMail.from_settings(resources.settings)


IDENTITY: dict[str, Callable[[Resources], IdentityProvider]] = {
    "local": lambda r: _local_directory(r).identity,
    "hantera": lambda r: _hantera(r).identity,
}
CUSTOMERS: dict[str, Callable[[Resources], CustomerProvider]] = {
    "local": lambda r: _local_directory(r).customers,
    "hantera": lambda r: _hantera(r).customers,
}
MAIL: dict[str, Callable[[Resources], MailProvider]] = {
    "outbox": _outbox,
    "smtp": _smtp,
    "hantera": lambda r: _hantera(r).mail,
}


def _hantera_email(email_canonical: str) -> None:
    from activities.errors import InvalidRequest
    from activities.providers.hantera import filter_literal

    try:
        filter_literal(email_canonical)
    except InvalidRequest:
        raise ValueError(
            "cannot be used with the hantera customers provider (quote, backslash or control"
            " character)"
        ) from None


CUSTOMER_EMAIL_RULES: dict[str, Callable[[str], None]] = {"hantera": _hantera_email}
"""Addresses a customers provider cannot look up, refused before a registration starts (rather
than after the customer typed the code)."""


def check_email(settings: Settings, email_canonical: str) -> None:
    """Raises ``ValueError`` if the configured customers provider cannot work with the address."""
    rule = CUSTOMER_EMAIL_RULES.get(settings.customers_provider)
    if rule is not None:
        rule(email_canonical)


@dataclass(frozen=True)
class Providers:
    identity: IdentityProvider
    customers: CustomerProvider
    mail: MailProvider

    def one_step_activation(self) -> OneStepActivation | None:
        """Step 5 as one transaction when identity and customers are the local provider on one
        file; ``None`` otherwise (also when a test wraps one of them), and step 5 makes the two
        calls of the roles."""
        from activities.providers.local import LocalCustomers, LocalIdentity

        identity, customers = self.identity, self.customers
        if (
            isinstance(identity, LocalIdentity)
            and isinstance(customers, LocalCustomers)
            and identity.directory is customers.directory
        ):
            return identity.directory
        return None


def _pick(table: dict[str, Callable[[Resources], T]], setting: str, name: str, r: Resources) -> T:
    try:
        factory = table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ConfigurationError(
            f"REGISTRATION_{setting.upper()}={name!r} is not a known provider (known: {known})"
        ) from None
    provider = factory(r)
    r.close_on_exit(provider)
    return provider


@asynccontextmanager
async def open_providers(settings: Settings) -> AsyncIterator[Providers]:
    """The configured provider of each role, closed again on exit."""
    async with AsyncExitStack() as stack:
        resources = Resources(settings, stack)
        yield Providers(
            identity=_pick(IDENTITY, "identity_provider", settings.identity_provider, resources),
            customers=_pick(
                CUSTOMERS, "customers_provider", settings.customers_provider, resources
            ),
            mail=_pick(MAIL, "mail_provider", settings.mail_provider, resources),
        )
