"""Customers-role activities: link the customer record found by email or create one, and undo
creation."""

from __future__ import annotations

from temporalio import activity

from activities.models import CustomerRef
from activities.roles import CustomerLink, CustomerProvider, NewCustomer


class CustomerActivities:
    def __init__(self, provider: CustomerProvider) -> None:
        self._provider = provider

    @activity.defn
    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        """Lookup and create in one step: one round trip fewer on the way to an active account,
        and no customer can appear in between. Idempotent on ``new.id`` (chosen by the workflow)."""
        return await self._provider.link_or_create_customer(new)

    @activity.defn
    async def undo_customer(self, ref: CustomerRef) -> bool:
        """Compensation: idempotent, a customer that is already gone counts as undone."""
        return await self._provider.undo_customer(ref.customer_id)
