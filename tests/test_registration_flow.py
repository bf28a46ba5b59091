"""End to end on the dev server with the local provider: the lifecycle paths of a registration."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.import_customers import import_customers
from activities.providers import local
from activities.providers.local import LocalIdentity
from activities.roles import (
    NewCustomer,
    NewPrincipal,
    Principal,
)
from starter.client import UnknownRegistration
from tests.doubles import CountingCustomers, GatedCustomers, activation_held_at_gate
from tests.helpers import (
    PASSWORD,
    categories,
    customers,
    identity,
    local_activities,
    register,
    register_and_submit_code,
    result_of,
    wait_for_state,
)
from tests.outbox import code_in, messages_to
from tests.scenarios import EMAIL as SCENARIO_EMAIL
from tests.scenarios import (
    active_code_repeated,
    answers_while_the_first_mail_is_out,
    cancelled_during_activation,
)
from tests.stack import Stack, beside, make_settings, on_queue_of, running_stack
from worker import workflow_runner
from workflows.models import (
    ActivationOutcome,
    ActivationReply,
    RegistrationState,
    ResendOutcome,
)


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
    await wait_for_state(stack, "carol@example.com", RegistrationState.ALREADY_REGISTERED)
    assert categories(stack, "carol@example.com")[-1] == "customer_already_registered"
    # Later calls are answered as for a new email too (the full course: test_activation_timers).
    reply = await stack.registrations.submit_code("carol@example.com", "123456")
    assert reply == ActivationReply(outcome=ActivationOutcome.INVALID_CODE, attempts_left=4)
    principal = await identity(stack).find_principal("carol@example.com")
    assert principal is not None and principal.active  # untouched


async def test_an_email_with_an_account_answers_as_a_new_one_while_the_first_mail_is_out(
    stack: Stack,
) -> None:
    owner = NewPrincipal(
        id="owner-1", email="olga@example.com", email_canonical="olga@example.com", name="Olga"
    )
    principal = await identity(stack).create_principal(owner, PASSWORD)
    await identity(stack).activate_principal(principal.id, "customer-1", "CUST1", principal.version)

    new_email = await answers_while_the_first_mail_is_out(stack, "oscar@example.com")
    has_account = await answers_while_the_first_mail_is_out(stack, "olga@example.com")
    assert has_account.replies == new_email.replies
    resend, code = new_email.replies
    assert resend.outcome is ResendOutcome.NOT_PENDING and resend.resends_left == 5
    assert code.outcome is ActivationOutcome.NOT_PENDING


async def test_an_email_with_an_account_takes_as_long_and_is_throttled_from_the_start(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a new email's registration spends before its first mail (Argon2id, 20 ms and more),
    an email with an account spends too, creating nothing; and both are told the same
    ``next_resend_at``, counted from the start, not from a first mail that went out sooner."""
    owner = NewPrincipal(
        id="owner-2",
        email="ursula@example.com",
        email_canonical="ursula@example.com",
        name="Ursula",
    )
    principal = await identity(stack).create_principal(owner, PASSWORD)
    await identity(stack).activate_principal(principal.id, "customer-2", "CUST2", principal.version)
    hashed: list[str] = []
    real_hash = local._hash_password

    def counted_hash(password: str) -> str:
        hashed.append(password)
        return real_hash(password)

    monkeypatch.setattr(local, "_hash_password", counted_hash)

    waits = []
    for email, state in (
        ("ulf@example.com", RegistrationState.PENDING),
        ("ursula@example.com", RegistrationState.ALREADY_REGISTERED),
    ):
        await register(stack, email)
        await wait_for_state(stack, email, state)
        reply = await stack.registrations.resend(email)
        assert reply.outcome is ResendOutcome.THROTTLED and reply.next_resend_at is not None
        waits.append(reply.next_resend_at - (await stack.registrations.status(email)).started_at)

    assert waits == [stack.settings.resend_interval] * 2
    assert hashed == [PASSWORD, PASSWORD]  # the new principal's, then the decoy's
    after = await identity(stack).find_principal("ursula@example.com")
    assert after is not None and after.id == principal.id and after.active


class ForeignPrincipals:
    """The local identity provider, reporting every principal as owned by someone else (as
    Hantera does for one that staff created): not one a registration may replace."""

    def __init__(self, inner: LocalIdentity) -> None:
        self.inner = inner
        self.in_process = inner.in_process

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def find_principal(self, email_canonical: str) -> Principal | None:
        found = await self.inner.find_principal(email_canonical)
        return found and found.model_copy(update={"replaceable": False})


async def test_an_inactive_principal_of_someone_else_is_not_replaced(stack: Stack) -> None:
    staff_made = NewPrincipal(
        id="staff-1", email="sven@example.com", email_canonical="sven@example.com", name="Sven"
    )
    await identity(stack).create_principal(staff_made, PASSWORD)
    async for running in beside(stack, "foreign", identity=ForeignPrincipals(identity(stack))):
        await register(running, "sven@example.com")
        await wait_for_state(running, "sven@example.com", RegistrationState.ALREADY_REGISTERED)
        await running.registrations.cancel("sven@example.com")
    principal = await identity(stack).get_principal("staff-1")
    assert principal is not None and not principal.active  # neither deleted nor replaced
    assert categories(stack, "sven@example.com") == ["customer_already_registered"]


async def test_the_leftover_of_a_terminated_registration_is_replaced(stack: Stack) -> None:
    """Terminate runs no compensation: the next registration of the email finds the inactive
    principal, which only a registration can have left, and replaces it."""
    receipt = await register(stack, "tove@example.com")
    await wait_for_state(stack, "tove@example.com", RegistrationState.PENDING)
    left = await identity(stack).find_principal("tove@example.com")
    assert left is not None and not left.active and left.replaceable
    await stack.client.get_workflow_handle(receipt.registration_id).terminate("by hand")
    await register(stack, "tove@example.com")
    await wait_for_state(stack, "tove@example.com", RegistrationState.PENDING)
    new = await identity(stack).find_principal("tove@example.com")
    assert new is not None and new.id != left.id
    assert await identity(stack).get_principal(left.id) is None


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
    with pytest.raises(UnknownRegistration, match="no pending registration for dave@"):
        await stack.registrations.submit_code("dave@example.com", "123456")


@pytest.fixture
async def gated(stack: Stack) -> AsyncIterator[tuple[GatedCustomers, Stack]]:
    """A second worker whose customer creation waits at a gate (same SQLite file as ``stack``)."""
    gate = GatedCustomers(customers(stack))
    async for running in beside(stack, "g", customers=gate):
        yield gate, running


async def test_cancel_during_activation_undoes_customer_and_principal(
    stack: Stack, dev_env: WorkflowEnvironment
) -> None:
    """The scenario (``tests/scenarios.py``, also recorded and replayed) checks the undos."""
    workflow_id = await cancelled_during_activation(stack, dev_env)
    async for reader in on_queue_of(stack, workflow_id):
        status = await reader.registrations.status(SCENARIO_EMAIL)
    assert status.state is RegistrationState.CANCELLED


async def test_a_code_submitted_again_during_activation_is_answered_like_the_first(
    stack: Stack, dev_env: WorkflowEnvironment
) -> None:
    """A double click, or a backend retrying after a timeout, must not hear "not pending"; only
    the right code is told, anything else would tell whoever asks who has an account. The
    scenario (``tests/scenarios.py``) checks the answers during the activation."""
    workflow_id = await active_code_repeated(stack, dev_env)
    async for reader in on_queue_of(stack, workflow_id):
        activation_mail = messages_to(stack.settings.outbox_path, SCENARIO_EMAIL)[0]
        code = code_in(activation_mail)
        with pytest.raises(UnknownRegistration):  # its run closed: as for an unknown email
            await reader.registrations.submit_code(SCENARIO_EMAIL, code)
        status = await reader.registrations.status(SCENARIO_EMAIL)
    assert status.state is RegistrationState.ACTIVE and status.attempts_left == 20


async def test_failure_after_customer_creation_deletes_that_customer(
    stack: Stack, gated: tuple[GatedCustomers, Stack]
) -> None:
    gate, gated_stack = gated
    receipt, submit = await activation_held_at_gate(gate, gated_stack, "frank@example.com")
    # Somebody removes the principal while the customer is being created.
    principal = await identity(stack).find_principal("frank@example.com")
    assert principal is not None
    await identity(stack).undo_principal(principal.id)
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
    assert status.reason is not None and status.reason.startswith("NotFound: principal ")
    assert status.reason.count("NotFound") == 1  # the type once, not again from its message


async def test_failure_never_deletes_a_linked_customer(stack: Stack) -> None:
    imported = await customers(stack).create_customer(
        NewCustomer(id="imported-7", email="ola@example.com", email_canonical="ola@example.com",
                    name="Ola (imported)")
    )  # fmt: skip
    receipt = await register(stack, "ola@example.com")
    await wait_for_state(stack, "ola@example.com", RegistrationState.PENDING)
    principal = await identity(stack).find_principal("ola@example.com")
    assert principal is not None
    await identity(stack).undo_principal(principal.id)

    reply = await stack.registrations.submit_code(
        "ola@example.com", stack.code_for("ola@example.com")
    )
    assert reply.outcome is ActivationOutcome.FAILED
    with pytest.raises(WorkflowFailureError):
        await result_of(stack, receipt.registration_id)
    assert await customers(stack).find_customer("ola@example.com") == imported
    status = await stack.registrations.status("ola@example.com")
    assert status.state is RegistrationState.FAILED
    # Linking and activating are one step in-process, and it failed as a whole: the status
    # claims no customer for this registration.
    assert status.customer_id is None and not status.linked_existing_customer


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


async def test_current_registration_links_and_activates_in_one_step(stack: Stack) -> None:
    counting = CountingCustomers(customers(stack))
    async for running in beside(stack, "n", customers=counting):
        receipt = await register(running, "nina@example.com")
        await wait_for_state(running, "nina@example.com", RegistrationState.PENDING)
        await running.registrations.submit_code(
            "nina@example.com", running.code_for("nina@example.com")
        )
        result = await result_of(running, receipt.registration_id)
        ran = await local_activities(running, receipt.registration_id)
    assert result.state is RegistrationState.ACTIVE
    assert counting.calls == ["link_or_create_customer"]
    assert ran[ran.index("verify_activation") + 1 :] == [
        "link_customer_and_activate",
        "send_welcome",
    ]
    principal = await identity(stack).find_principal("nina@example.com")
    assert principal is not None and principal.active
    assert principal.customer_id == result.customer_id


async def test_profile_goes_to_the_customer_and_metadata_to_the_status(stack: Stack) -> None:
    email = "paula@example.com"
    await stack.registrations.register(
        email=email,
        name="Paula Profile",
        password=PASSWORD,
        profile={"company": "Paula & Co", "newsletter": "yes"},
        metadata={"source": "checkout"},
    )
    await wait_for_state(stack, email, RegistrationState.PENDING)
    assert (await stack.registrations.status(email)).metadata == {"source": "checkout"}
    await stack.registrations.submit_code(email, stack.code_for(email))
    status = await stack.registrations.status(email)
    assert status.state is RegistrationState.ACTIVE
    with sqlite3.connect(stack.settings.database_path) as conn:
        (stored,) = conn.execute(
            "SELECT profile FROM customers WHERE id = ?", (status.customer_id,)
        ).fetchone()
    conn.close()
    assert json.loads(stored) == {"company": "Paula & Co", "newsletter": "yes"}


async def test_a_registration_runs_the_same_without_the_sandbox(stack: Stack) -> None:
    """``REGISTRATION_WORKFLOW_SANDBOX=false``, the deployment default (docs/capacity.md): the
    worker runs the workflow outside the SDK's sandbox, where the tests run it, and a
    registration ends active as it does inside it."""
    assert isinstance(workflow_runner(stack.settings), SandboxedWorkflowRunner)
    without = {"workflow_sandbox": False}
    async for unsandboxed in beside(stack, "unsandboxed", settings=without):
        assert isinstance(workflow_runner(unsandboxed.settings), UnsandboxedWorkflowRunner)
        receipt, outcome = await register_and_submit_code(unsandboxed, "nosandbox@example.com")
        assert outcome is ActivationOutcome.ACTIVATED
        result = await result_of(unsandboxed, receipt.registration_id)
        assert result.state is RegistrationState.ACTIVE
