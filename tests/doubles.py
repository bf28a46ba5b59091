"""Test doubles: the real providers, wrapped to count calls, wait at a gate or refuse on purpose.

Shared by the tests and by the recorded scenarios (``tests/scenarios.py``), so the rare paths a
test drives live are the same ones whose histories are replayed.
"""

from __future__ import annotations

import asyncio

from activities.errors import InvalidRequest, NotFound
from activities.providers.local import LocalCustomers, LocalIdentity
from activities.roles import (
    Customer,
    CustomerLink,
    MailMessage,
    MailProvider,
    NewCustomer,
    NewPrincipal,
    Principal,
)
from starter.client import Receipt
from tests.helpers import NAME, register, wait_for_state
from tests.stack import Stack
from workflows.models import ActivationReply, RegistrationState


class HeldMail:
    """The stack's mail provider as a remote one (regular activities: the workflow takes calls
    while a mail is out), each send after the first ``let_through`` waiting at a gate."""

    in_process = False

    def __init__(self, inner: MailProvider, let_through: int = 0) -> None:
        self.inner = inner
        self.let_through = let_through
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, message: MailMessage) -> None:
        if self.let_through > 0:
            self.let_through -= 1
        else:
            self.reached.set()
            await self.release.wait()
        await self.inner.send(message)

    async def aclose(self) -> None:
        pass


class CountingCustomers:
    """The real local customers provider, counting which operations the workflow calls."""

    def __init__(self, inner: LocalCustomers) -> None:
        self.inner = inner
        self.in_process = inner.in_process
        self.calls: list[str] = []

    async def find_customer(self, email_canonical: str) -> Customer | None:
        self.calls.append("find_customer")
        return await self.inner.find_customer(email_canonical)

    async def create_customer(self, new: NewCustomer) -> Customer:
        self.calls.append("create_customer")
        return await self.inner.create_customer(new)

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        self.calls.append("link_or_create_customer")
        return await self.inner.link_or_create_customer(new)

    async def undo_customer(self, customer_id: str) -> bool:
        self.calls.append("undo_customer")
        return await self.inner.undo_customer(customer_id)

    async def aclose(self) -> None:
        pass


class GatedCustomers(CountingCustomers):
    """The real local customers provider, whose ``link_or_create_customer`` (the workflow's
    customer step) waits at a gate once it has created the customer: lets a test act (cancel,
    break something) while the activation is half way."""

    def __init__(self, inner: LocalCustomers) -> None:
        super().__init__(inner)
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        link = await super().link_or_create_customer(new)
        self.reached.set()
        await self.release.wait()
        return link


class RejectingIdentity:
    """The local identity provider, except that activation always fails for good (the principal
    is "gone") and the first ``rejections`` deletes are refused as invalid, as a remote provider
    might while someone fixes the record."""

    def __init__(self, inner: LocalIdentity, rejections: int) -> None:
        self.inner = inner
        self.in_process = inner.in_process
        self.capabilities = inner.capabilities
        self.rejections = rejections
        self.deletes = 0

    async def find_principal(self, email_canonical: str) -> Principal | None:
        return await self.inner.find_principal(email_canonical)

    async def get_principal(self, principal_id: str) -> Principal | None:
        return await self.inner.get_principal(principal_id)

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        return await self.inner.create_principal(new, password)

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        await self.inner.decoy_create(new, password)

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        raise NotFound(f"principal {principal_id} does not exist")

    async def undo_principal(self, principal_id: str) -> bool:
        self.deletes += 1
        if self.deletes <= self.rejections:
            raise InvalidRequest("the provider refuses the delete for now")
        return await self.inner.undo_principal(principal_id)

    async def aclose(self) -> None:
        pass


class HeldRejectingIdentity(RejectingIdentity):
    """``RejectingIdentity`` as a remote provider (regular activities, so a cancel reaches the
    workflow while one runs), whose first delete waits at a gate before it is refused."""

    def __init__(self, inner: LocalIdentity, rejections: int) -> None:
        super().__init__(inner, rejections)
        self.in_process = False
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def undo_principal(self, principal_id: str) -> bool:
        if self.deletes == 0:
            self.reached.set()
            await self.release.wait()
        return await super().undo_principal(principal_id)


async def activation_held_at_gate(
    gate: GatedCustomers, gated_stack: Stack, email: str, name: str = NAME
) -> tuple[Receipt, asyncio.Task[ActivationReply]]:
    """Register, submit the right code in the background, return once customer creation waits
    at the gate: the caller acts while the activation is half way."""
    receipt = await register(gated_stack, email, name)
    await wait_for_state(gated_stack, email, RegistrationState.PENDING)
    submit = asyncio.create_task(
        gated_stack.registrations.submit_code(email, gated_stack.code_for(email))
    )
    await asyncio.wait_for(gate.reached.wait(), 10)
    return receipt, submit
