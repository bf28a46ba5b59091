"""What a provider module declares about itself (``ProviderSpec``), and the shared objects its
factories draw on (``Resources``).

Each provider module ends with one ``SPEC``; the registry (``activities/providers/__init__.py``)
is built from the list of them, so adding a provider is one module, one line in that list, and
its tests. The factories are typed with the role Protocols, so mypy checks every provider
against the role it claims.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

from activities.roles import (
    CustomerProvider,
    IdentityCapabilities,
    IdentityProvider,
    MailProvider,
)
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


@dataclass(frozen=True)
class ProviderSpec:
    """One provider: its name (the value of ``REGISTRATION_<ROLE>_PROVIDER``), a factory per
    role it serves, and what the workflow and the configuration check need to know of it."""

    name: str
    identity: Callable[[Resources], IdentityProvider] | None = None
    customers: Callable[[Resources], CustomerProvider] | None = None
    mail: Callable[[Resources], MailProvider] | None = None
    capabilities: IdentityCapabilities | None = None
    """The identity role's shape (the identity provider object carries the same value)."""
    env_prefix: str | None = None
    """``REGISTRATION_<VENDOR>_``: its own settings, which it reads and checks itself."""
    email_rule: Callable[[str], None] | None = None
    """Raises ``ValueError`` for a canonical address the provider cannot work with (e.g. one
    that cannot be put into its query language), so the registration fails at its first step,
    before anything is created or mailed."""
    listable_leftovers: bool = False
    """Whether it can list the records registrations left behind (a later sweep's need)."""

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(
            role for role in ("identity", "customers", "mail") if getattr(self, role) is not None
        )
