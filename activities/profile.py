"""Tells the workflow, once per registration, which provider roles are in-process.

The answer is recorded in history, so a replay (or a worker restarted with other providers)
keeps the choice between local and regular activities that the registration started with.
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
            customer_in_one_step=True,
            existing_account_answers_as_pending=True,
            activation_in_one_step=identity.in_process and customers.in_process,
            existing_account_in_equal_time=True,
        )

    @activity.defn
    async def describe_providers(self) -> ProviderProfile:
        return self._profile
