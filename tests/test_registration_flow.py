"""End to end on the dev server with the local provider: the lifecycle paths of a registration."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError

from activities.providers.local import LocalCustomers
from activities.roles import Customer, NewCustomer
from starter.cli import import_customers
from starter.client import Receipt
from tests.helpers import PASSWORD, customers, identity, register, result_of, wait_for_state
from tests.outbox import messages_to
from tests.stack import Stack, make_settings, running_stack
from workflows.models import ActivationOutcome, ActivationReply, RegistrationState


def categories(stack: Stack, email: str) -> list[str]:
    return [str(m["X-Category"]) for m in messages_to(stack.settings.outbox_path, email)]


async def test_happy_path_creates_customer_and_activates_principal(stack: Stack) -> None:
    receipt = await register(stack, "Alice.Andersson@Example.COM")
    assert receipt.registration_id == "registration-alice.andersson@example.com"
    await wait_for_state(stack, "alice.andersson@example.com", RegistrationState.PENDING)

    code = stack.code_for("Alice.Andersson@Example.COM")
    reply = await stack.registrations.submit_code("alice.andersson@example.com", code)
    assert reply.outcome is ActivationOutcome.ACTIVATED

    status = await stack.registrations.status("alice.andersson@example.com")
    assert status.state is RegistrationState.ACTIVE
    assert status.customer_number == "CUST100001"
    assert not status.linked_existing_customer
    principal = await identity(stack).find_principal("alice.andersson@example.com")
    assert principal is not None and principal.active
    assert principal.email == "Alice.Andersson@Example.COM"  # display spelling kept
    assert principal.customer_id == status.customer_id
    assert await identity(stack).verify_password(principal.id, PASSWORD)
    result = await result_of(stack, receipt.registration_id)
    assert result.state is RegistrationState.ACTIVE
    assert categories(stack, "alice.andersson@example.com") == [
        "customer_activation",
        "customer_welcome",
    ]


async def test_links_an_existing_customer_instead_of_creating_one(
    stack: Stack, tmp_path: Path
) -> None:
    rows = tmp_path / "customers.jsonl"
    rows.write_text(json.dumps({"email": "Bob@Example.com", "name": "Bob"}) + "\n")
    imported = await import_customers(stack.settings, rows)
    number = imported["imported"][0]["customer_number"]
    again = await import_customers(stack.settings, rows)
    assert again == {"imported": [], "already_present": ["Bob@Example.com"]}

    await register(stack, "bob@example.com", "Bob Builder")
    await wait_for_state(stack, "bob@example.com", RegistrationState.PENDING)
    reply = await stack.registrations.submit_code(
        "bob@example.com", stack.code_for("bob@example.com")
    )
    assert reply.outcome is ActivationOutcome.ACTIVATED
    status = await stack.registrations.status("bob@example.com")
    assert status.linked_existing_customer
    assert status.customer_number == number
    principal = await identity(stack).find_principal("bob@example.com")
    assert principal is not None and principal.customer_id == status.customer_id


async def test_already_registered_gets_the_same_answer_and_a_notice(stack: Stack) -> None:
    first = await register(stack, "carol@example.com")
    await wait_for_state(stack, "carol@example.com", RegistrationState.PENDING)
    await stack.registrations.submit_code("carol@example.com", stack.code_for("carol@example.com"))
    await result_of(stack, first.registration_id)

    second = await register(stack, "Carol@Example.com")
    assert second == first  # indistinguishable from a fresh registration
    result = await result_of(stack, second.registration_id)
    assert result.state is RegistrationState.ALREADY_REGISTERED
    assert categories(stack, "carol@example.com")[-1] == "customer_already_registered"
    principal = await identity(stack).find_principal("carol@example.com")
    assert principal is not None and principal.active  # untouched


async def test_cancel_while_waiting_deletes_the_principal(stack: Stack) -> None:
    receipt = await register(stack, "dave@example.com")
    await wait_for_state(stack, "dave@example.com", RegistrationState.PENDING)
    assert await identity(stack).find_principal("dave@example.com") is not None

    await stack.registrations.cancel("dave@example.com", reason="customer asked")
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(stack, receipt.registration_id)
    assert isinstance(failure.value.cause, CancelledError)
    assert await identity(stack).find_principal("dave@example.com") is None
    status = await stack.registrations.status("dave@example.com")
    assert status.state is RegistrationState.CANCELLED
    reply = await stack.registrations.submit_code("dave@example.com", "123456")
    assert reply.outcome is ActivationOutcome.NOT_PENDING


class GatedCustomers:
    """The real local customers provider, whose ``create_customer`` waits at a gate: lets a
    test act (cancel, break something) while the activation is half way."""

    def __init__(self, inner: LocalCustomers) -> None:
        self.inner = inner
        self.in_process = inner.in_process
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def find_customer(self, email_canonical: str) -> Customer | None:
        return await self.inner.find_customer(email_canonical)

    async def create_customer(self, new: NewCustomer) -> Customer:
        created = await self.inner.create_customer(new)
        self.reached.set()
        await self.release.wait()
        return created

    async def delete_customer(self, customer_id: str) -> bool:
        return await self.inner.delete_customer(customer_id)

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def gated(dev_env: Any, stack: Stack) -> AsyncIterator[tuple[GatedCustomers, Stack]]:
    """A second worker whose customer creation waits at a gate (same SQLite file as ``stack``)."""
    gate = GatedCustomers(customers(stack))
    providers = dataclasses.replace(stack.providers, customers=gate)
    settings = stack.settings.model_copy(update={"task_queue": stack.settings.task_queue + "-g"})
    async for running in running_stack(dev_env.client, settings, providers):
        yield gate, running


async def activation_held_at_gate(
    gate: GatedCustomers, gated_stack: Stack, email: str
) -> tuple[Receipt, asyncio.Task[ActivationReply]]:
    """Register, submit the right code in the background, return once customer creation waits
    at the gate: the test acts while the activation is half way."""
    receipt = await register(gated_stack, email)
    await wait_for_state(gated_stack, email, RegistrationState.PENDING)
    submit = asyncio.create_task(
        gated_stack.registrations.submit_code(email, gated_stack.code_for(email))
    )
    await asyncio.wait_for(gate.reached.wait(), 10)
    return receipt, submit


async def test_cancel_during_activation_undoes_customer_and_principal(
    stack: Stack, gated: tuple[GatedCustomers, Stack]
) -> None:
    gate, gated_stack = gated
    receipt, submit = await activation_held_at_gate(gate, gated_stack, "erin@example.com")
    assert await customers(stack).find_customer("erin@example.com") is not None
    await gated_stack.registrations.cancel("erin@example.com")
    await asyncio.sleep(0.3)  # let the cancel reach the workflow while the step still runs
    gate.release.set()
    reply = await submit
    assert reply.outcome is ActivationOutcome.NOT_PENDING
    with pytest.raises(WorkflowFailureError):
        await result_of(gated_stack, receipt.registration_id)
    assert await customers(stack).find_customer("erin@example.com") is None
    assert await identity(stack).find_principal("erin@example.com") is None
    status = await gated_stack.registrations.status("erin@example.com")
    assert status.state is RegistrationState.CANCELLED


async def test_failure_after_customer_creation_deletes_that_customer(
    stack: Stack, gated: tuple[GatedCustomers, Stack]
) -> None:
    gate, gated_stack = gated
    receipt, submit = await activation_held_at_gate(gate, gated_stack, "frank@example.com")
    # Somebody removes the principal while the customer is being created.
    principal = await identity(stack).find_principal("frank@example.com")
    assert principal is not None
    await identity(stack).delete_principal(principal.id)
    gate.release.set()

    reply = await submit
    assert reply.outcome is ActivationOutcome.FAILED
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(gated_stack, receipt.registration_id)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RegistrationFailed"
    assert "NotFound" in str(cause)
    assert await customers(stack).find_customer("frank@example.com") is None
    status = await gated_stack.registrations.status("frank@example.com")
    assert status.state is RegistrationState.FAILED
    assert status.reason is not None and "NotFound" in status.reason


async def test_failure_never_deletes_a_linked_customer(stack: Stack) -> None:
    imported = await customers(stack).create_customer(
        NewCustomer(id="imported-7", email="ola@example.com", email_canonical="ola@example.com",
                    name="Ola (imported)")
    )  # fmt: skip
    receipt = await register(stack, "ola@example.com")
    await wait_for_state(stack, "ola@example.com", RegistrationState.PENDING)
    principal = await identity(stack).find_principal("ola@example.com")
    assert principal is not None
    await identity(stack).delete_principal(principal.id)

    reply = await stack.registrations.submit_code(
        "ola@example.com", stack.code_for("ola@example.com")
    )
    assert reply.outcome is ActivationOutcome.FAILED
    with pytest.raises(WorkflowFailureError):
        await result_of(stack, receipt.registration_id)
    assert await customers(stack).find_customer("ola@example.com") == imported
    status = await stack.registrations.status("ola@example.com")
    assert status.state is RegistrationState.FAILED and status.linked_existing_customer


async def test_staff_approval_activates_without_code(stack: Stack) -> None:
    receipt = await register(stack, "grace@example.com")
    await wait_for_state(stack, "grace@example.com", RegistrationState.PENDING)
    await stack.registrations.approve("grace@example.com", "support:kim", "verified by phone")
    result = await result_of(stack, receipt.registration_id)
    assert result.state is RegistrationState.ACTIVE
    status = await stack.registrations.status("grace@example.com")
    assert status.approved_by == "support:kim"
    assert status.approval_reason == "verified by phone"
    principal = await identity(stack).find_principal("grace@example.com")
    assert principal is not None and principal.active


async def test_concurrent_double_start_makes_one_registration(stack: Stack) -> None:
    first, second = await asyncio.gather(
        register(stack, "heidi@example.com"), register(stack, "HEIDI@example.com")
    )
    assert first == second
    await wait_for_state(stack, "heidi@example.com", RegistrationState.PENDING)
    runs = [
        execution
        async for execution in stack.client.list_workflows(
            # The server is shared by the session: only this stack's task queue counts.
            f"WorkflowId = '{first.registration_id}' AND TaskQueue = '{stack.settings.task_queue}'"
        )
    ]
    assert len(runs) == 1
    assert runs[0].status is WorkflowExecutionStatus.RUNNING
    await asyncio.sleep(0.5)  # the repeat's resend is throttled: still one code mail
    assert categories(stack, "heidi@example.com") == ["customer_activation"]


async def test_link_mode_mails_a_long_token_that_activates(dev_env: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, activation_link_base="https://shop.example/activate")
    async for linked in running_stack(dev_env.client, settings):
        await register(linked, "Lena+shop@Example.com")
        await wait_for_state(linked, "lena+shop@example.com", RegistrationState.PENDING)
        (mail,) = messages_to(settings.outbox_path, "Lena+shop@Example.com")
        body = mail.get_body(preferencelist=("plain",))
        assert body is not None
        (link,) = re.findall(r"https://shop\.example/activate\?\S+", body.get_content())
        query = parse_qs(urlsplit(link).query)
        assert query["email"] == ["Lena+shop@Example.com"]
        token = query["token"][0]
        assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8 >= 128
        reply = await linked.registrations.submit_code("lena+shop@example.com", token)
        assert reply.outcome is ActivationOutcome.ACTIVATED
