"""Customers-role activities: link the customer record found by email or create one, and undo
creation."""

from __future__ import annotations

from temporalio import activity

from activities.models import CustomerRef, EmailLookup
from activities.roles import Customer, CustomerLink, CustomerProvider, NewCustomer


class CustomerActivities:
    def __init__(self, provider: CustomerProvider) -> None:
        self._provider = provider

    @activity.defn
    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        """Lookup and create in one step: one round trip fewer on the way to an active account,
        and no customer can appear in between. Idempotent on ``new.id`` (chosen by the workflow)."""
        return await self._provider.link_or_create_customer(new)

    @activity.defn
    async def delete_customer(self, ref: CustomerRef) -> bool:
        """Compensation: idempotent, a customer that is already gone counts as deleted."""
        return await self._provider.delete_customer(ref.customer_id)

    # Registrations started before ``ProviderProfile.customer_in_one_step`` take the two steps
    # below; keep them registered while such registrations can still be pending.

    @activity.defn
    async def find_customer(self, lookup: EmailLookup) -> Customer | None:
        return await self._provider.find_customer(lookup.email_canonical)

    @activity.defn
    async def create_customer(self, new: NewCustomer) -> Customer:
        """Idempotent on ``new.id`` (chosen by the workflow), so a retry creates nothing twice."""
        return await self._provider.create_customer(new)
