"""The provider registry: which provider serves each role, built from the providers' own specs.

An unknown name, a provider that does not serve the role asked of it, a combination whose shapes
do not fit together, or a provider whose own settings are missing stops the worker at start-up
with a ``ConfigurationError`` naming the setting. Providers that share a resource (the local
identity and customers share one SQLite file) get it from ``Resources``, which also closes
everything on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from activities.errors import ConfigurationError
from activities.providers import cloudentity, emporix, hantera, local, medusa, norce, outbox, smtp
from activities.providers.spec import ProviderSpec, Resources
from activities.roles import (
    CodeIssuer,
    CodeOwner,
    CustomerProvider,
    IdentityProvider,
    LoginCreated,
    MailProvider,
    OneStepActivation,
)
from common.settings import Settings, env_variable

T = TypeVar("T")

SPECS: tuple[ProviderSpec, ...] = (
    local.SPEC,
    hantera.SPEC,
    medusa.SPEC,
    emporix.SPEC,
    norce.SPEC,
    cloudentity.SPEC,
    outbox.SPEC,
    smtp.SPEC,
)
BY_NAME = {spec.name: spec for spec in SPECS}
ROLES = ("identity", "customers", "mail")


def configured(settings: Settings) -> dict[str, ProviderSpec]:
    """The spec chosen for each role, checked: it exists, serves the role, and the shapes fit."""
    chosen: dict[str, ProviderSpec] = {}
    for role in ROLES:
        variable = env_variable(f"{role}_provider")
        name = getattr(settings, f"{role}_provider")
        spec = BY_NAME.get(name)
        serving = sorted(s.name for s in SPECS if getattr(s, role) is not None)
        if spec is None or getattr(spec, role) is None:
            known = ", ".join(serving)
            what = (
                "is not a known provider"
                if spec is None
                else f"does not serve {role}: it serves {' and '.join(spec.roles)} only"
            )
            raise ConfigurationError(f"{variable}={name!r} {what} (known: {known})")
        chosen[role] = spec
    identity = chosen["identity"]
    shape = identity.capabilities
    if shape is not None and shape.one_record and chosen["customers"] is not identity:
        raise ConfigurationError(
            f"{env_variable('customers_provider')} must be {identity.name!r} too: the"
            f" {identity.name} login and customer are one record"
        )
    return chosen


def check_email(settings: Settings, email_canonical: str) -> None:
    """Raises ``ValueError`` if a configured provider cannot work with the address (an unknown
    name is ``open_providers``' to report)."""
    names = {getattr(settings, f"{role}_provider") for role in ROLES}
    for name in sorted(names):
        spec = BY_NAME.get(name)
        if spec is not None and spec.email_rule is not None:
            spec.email_rule(email_canonical)


def provider_prefixes() -> tuple[str, ...]:
    """The ``REGISTRATION_<VENDOR>_`` prefixes that providers read and check themselves."""
    return tuple(spec.env_prefix for spec in SPECS if spec.env_prefix)


@dataclass(frozen=True)
class Providers:
    identity: IdentityProvider
    customers: CustomerProvider
    mail: MailProvider

    def one_step_activation(self) -> OneStepActivation | None:
        """Step 5 as one transaction when identity and customers are the local provider on one
        file; ``None`` otherwise (also when a test wraps one of them), and step 5 makes the two
        calls of the roles."""
        identity, customers = self.identity, self.customers
        if (
            isinstance(identity, local.LocalIdentity)
            and isinstance(customers, local.LocalCustomers)
            and identity.directory is customers.directory
        ):
            return identity.directory
        return None

    def check_code_pattern(self, settings: Settings) -> None:
        """The client checks codes against ``REGISTRATION_CODE_PATTERN``: it must be the format
        of the codes the registrations mail, or every code would be refused (or none checked)."""
        declared = self.identity.capabilities.code_pattern
        if settings.code_pattern != declared:
            raise ConfigurationError(
                f"{env_variable('code_pattern')}={settings.code_pattern!r}: the identity"
                f" provider's codes have the format {declared!r}; set it to that"
            )

    def code_issuer(self) -> CodeIssuer | None:
        """The identity provider, where it makes and checks the activation codes."""
        shape = self.identity.capabilities
        if shape.code is not CodeOwner.PROVIDER:
            return None
        if not isinstance(self.identity, CodeIssuer):
            raise ConfigurationError("an identity provider that owns codes must be a CodeIssuer")
        if shape.login_created is not LoginCreated.SIGNUP:
            raise ConfigurationError("a provider's codes need a login created at sign-up")
        return self.identity


def _made(factory: Callable[[Resources], T] | None, resources: Resources) -> T:
    assert factory is not None, "checked by configured()"
    provider = factory(resources)
    resources.close_on_exit(provider)
    return provider


@asynccontextmanager
async def open_providers(settings: Settings) -> AsyncIterator[Providers]:
    """The configured provider of each role, closed again on exit."""
    chosen = configured(settings)
    async with AsyncExitStack() as stack:
        resources = Resources(settings, stack)
        providers = Providers(
            identity=_made(chosen["identity"].identity, resources),
            customers=_made(chosen["customers"].customers, resources),
            mail=_made(chosen["mail"].mail, resources),
        )
        providers.code_issuer()  # a shape the provider cannot serve stops the start-up
        yield providers
