"""Customers-role activities: find an existing customer record or create one, and undo creation."""

from __future__ import annotations

from temporalio import activity

from activities.models import CustomerRef, EmailLookup
from activities.roles import Customer, CustomerProvider, NewCustomer


class CustomerActivities:
    def __init__(self, provider: CustomerProvider) -> None:
        self._provider = provider

    @activity.defn
    async def find_customer(self, lookup: EmailLookup) -> Customer | None:
        return await self._provider.find_customer(lookup.email_canonical)

    @activity.defn
    async def create_customer(self, new: NewCustomer) -> Customer:
        """Idempotent on ``new.id`` (chosen by the workflow), so a retry creates nothing twice."""
        return await self._provider.create_customer(new)

    @activity.defn
    async def delete_customer(self, ref: CustomerRef) -> bool:
        """Compensation: idempotent, a customer that is already gone counts as deleted."""
        return await self._provider.delete_customer(ref.customer_id)
