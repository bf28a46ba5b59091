"""Tells the workflow, once per registration, how to run its providers: which roles are
in-process, and the identity provider's shape.

The answer is recorded in history, so a replay (or a worker restarted with other providers)
keeps the choices the registration started with.
"""

from __future__ import annotations

from temporalio import activity

from activities.models import ProviderProfile
from activities.roles import CustomerProvider, IdentityProvider, MailProvider


class ProfileActivities:
    def __init__(
        self, identity: IdentityProvider, customers: CustomerProvider, mail: MailProvider
    ) -> None:
        self._profile = ProviderProfile(
            identity_in_process=identity.in_process,
            customers_in_process=customers.in_process,
            mail_in_process=mail.in_process,
            identity=identity.capabilities,
        )

    @activity.defn
    async def describe_providers(self) -> ProviderProfile:
        return self._profile
