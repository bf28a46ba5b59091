"""End to end with Emporix: dev server + worker + the loopback Emporix simulator over real HTTP.

Identity and customers on Emporix (one record: the sign-up creates it inactive with the
anonymous token, the code activates it with a PATCH of the service token), mail on the outbox.
Each test has its own simulator and task queue; assertions read the simulator's state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.providers.emporix import MIXIN
from common.settings import Settings
from tests.helpers import PASSWORD, categories, register, result_of, wait_for_state, wrong_code
from tests.outbox import latest_code
from tests.simulators.emporix import EmporixSimulator, running
from tests.simulators.loopback import point_env
from tests.stack import Stack, make_settings, running_stack
from workflows.models import ActivationOutcome, RegistrationState

SIGNUP = "/customer/acme/signup"
ACTIVATION = "customer_activation"
NOTICE = "customer_already_registered"


@pytest.fixture
async def sim() -> AsyncIterator[EmporixSimulator]:
    async with running(EmporixSimulator(seed=1)) as simulator:
        yield simulator


@pytest.fixture
def emporix_env(
    sim: EmporixSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> EmporixSimulator:
    monkeypatch.chdir(tmp_path)
    point_env(monkeypatch, "REGISTRATION_EMPORIX_", sim.env())
    return sim


def emporix_settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / ".data", identity_provider="emporix", customers_provider="emporix"
    )


@pytest.fixture
async def estack(
    dev_env: WorkflowEnvironment, emporix_env: EmporixSimulator, tmp_path: Path
) -> AsyncIterator[Stack]:
    async for running_ in running_stack(dev_env.client, emporix_settings(tmp_path)):
        yield running_


@pytest.fixture
async def time_estack(
    time_env: WorkflowEnvironment, emporix_env: EmporixSimulator, tmp_path: Path
) -> AsyncIterator[Stack]:
    async for running_ in running_stack(time_env.client, emporix_settings(tmp_path)):
        yield running_


async def pending(stack: Stack, email: str, name: str = "Alice Andersson") -> str:
    receipt = await register(stack, email, name)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    return receipt.registration_id


def the_record(sim: EmporixSimulator, email: str) -> dict[str, Any]:
    found = sim.by_email(email)
    assert len(found) == 1, f"{len(found)} records for {email} at the simulator"
    return found[0]


async def login(sim: EmporixSimulator, email: str, password: str) -> int:
    """The storefront's login (anonymous token, then ``POST /customer/{tenant}/login``)."""
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        anonymous = await http.get(
            "/customerlogin/auth/anonymous/login",
            params={"tenant": sim.tenant, "client_id": sim.storefront_client_id},
        )
        token = anonymous.json()["access_token"]
        answer = await http.post(
            f"/customer/{sim.tenant}/login",
            json={"email": email, "password": password},
            headers={"Authorization": f"Bearer {token}"},
        )
        return answer.status_code


async def test_happy_path_signup_inactive_then_activated_and_can_log_in(
    estack: Stack, sim: EmporixSimulator
) -> None:
    email, canonical = "Alice.Andersson@Example.COM", "alice.andersson@example.com"
    registration_id = await pending(estack, email)

    record = the_record(sim, canonical)
    assert record["active"] is False
    assert record["accounts"] == [{"id": canonical}]
    assert (record["firstName"], record["lastName"]) == ("Alice", "Andersson")
    status = await estack.registrations.status(canonical)
    assert record["mixins"][MIXIN]["principalId"] == status.principal_id
    assert record["mixins"][MIXIN]["workflowId"] == registration_id
    assert sim.passwords[canonical] == PASSWORD
    assert all(PASSWORD not in repr(r.body) for r in sim.requests)
    assert await login(sim, canonical, PASSWORD) == 401  # inactive accounts cannot log in

    code = latest_code(estack.settings.outbox_path, canonical)
    reply = await estack.registrations.submit_code(canonical, code)
    assert reply.outcome is ActivationOutcome.ACTIVATED

    record = the_record(sim, canonical)
    assert record["active"] is True and record["onHold"] is False
    (patch,) = [r for r in sim.requests if r.method == "PATCH"]
    assert patch.body == {"active": True, "onHold": False, "metadata": {"version": 1}}
    result = await result_of(estack, registration_id)
    assert result.state is RegistrationState.ACTIVE
    assert result.customer_id == record["id"]
    status = await estack.registrations.status(canonical)
    assert status.customer_number == record["customerNumber"]
    assert not status.linked_existing_customer
    assert sim.count("POST", SIGNUP) == 1
    assert await login(sim, canonical, PASSWORD) == 200


async def test_wrong_code_leaves_the_record_inactive(estack: Stack, sim: EmporixSimulator) -> None:
    email = "wrong@example.com"
    await pending(estack, email)
    code = latest_code(estack.settings.outbox_path, email)
    reply = await estack.registrations.submit_code(email, wrong_code(code))
    assert reply.outcome is ActivationOutcome.INVALID_CODE
    assert the_record(sim, email)["active"] is False
    assert [r for r in sim.requests if r.method == "PATCH"] == []
    reply = await estack.registrations.submit_code(email, code)
    assert reply.outcome is ActivationOutcome.ACTIVATED


async def test_cancel_while_pending_deletes_the_signup(
    estack: Stack, sim: EmporixSimulator
) -> None:
    email = "dave@example.com"
    registration_id = await pending(estack, email)
    number = the_record(sim, email)["customerNumber"]

    await estack.registrations.cancel(email, reason="customer asked")
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(estack, registration_id)
    assert isinstance(failure.value.cause, CancelledError)
    assert sim.customers == {}
    assert sim.count("DELETE", f"/customer/acme/customers/{number}", 202) == 1


async def test_expiry_deletes_the_signup(
    time_env: WorkflowEnvironment, time_estack: Stack, sim: EmporixSimulator
) -> None:
    email = "tess@example.com"
    registration_id = await pending(time_estack, email)
    await time_env.sleep(timedelta(hours=24, minutes=1))
    result = await result_of(time_estack, registration_id)
    assert result.state is RegistrationState.EXPIRED
    assert sim.customers == {}
    assert len(sim.deleted) == 1


async def test_failure_after_signup_is_compensated(estack: Stack, sim: EmporixSimulator) -> None:
    """The activation PATCH keeps losing the race for the version: the registration fails and
    the inactive signup is deleted."""
    email = "race@example.com"
    registration_id = await pending(estack, email)
    sim.set_faults(concurrent_patches=100)
    code = latest_code(estack.settings.outbox_path, email)
    reply = await estack.registrations.submit_code(email, code)
    assert reply.outcome is ActivationOutcome.FAILED
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(estack, registration_id)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RegistrationFailed"
    assert sim.customers == {}
    assert len(sim.deleted) == 1


async def test_an_email_with_an_active_account_gets_no_code_and_nothing_is_created(
    estack: Stack, sim: EmporixSimulator
) -> None:
    email = "owner@example.com"
    sim.add_customer(email, password="their own password")
    await register(estack, email)
    await wait_for_state(estack, email, RegistrationState.ALREADY_REGISTERED)
    assert categories(estack, email) == [NOTICE]
    assert sim.count("POST", SIGNUP) == 0
    assert len(sim.customers) == 1
    assert sim.deleted == []


async def test_an_imported_customer_the_lookup_cannot_see_stays_one_record(
    estack: Stack, sim: EmporixSimulator
) -> None:
    """An employee created the record with another contact email: the lookup by contact email
    misses it, the sign-up meets 409, and the registration is answered as for an account (the
    owner mailed the notice with the password-reset pointer); nothing created or deleted."""
    email = "imported@example.com"
    imported = sim.add_customer("office@example.com", account_email=email)
    await register(estack, email)
    await wait_for_state(estack, email, RegistrationState.ALREADY_REGISTERED)
    assert categories(estack, email) == [NOTICE]
    assert sim.count("POST", SIGNUP, 409) == 1
    assert list(sim.customers.values()) == [imported]
    assert sim.deleted == []


async def test_an_inactive_imported_customer_is_not_replaced(
    estack: Stack, sim: EmporixSimulator
) -> None:
    email = "onhold@example.com"
    imported = sim.add_customer(email, active=False)
    await register(estack, email)
    await wait_for_state(estack, email, RegistrationState.ALREADY_REGISTERED)
    assert list(sim.customers.values()) == [imported]
    assert sim.count("POST", SIGNUP) == 0 and sim.deleted == []


async def test_a_retried_signup_after_a_lost_answer_makes_no_second_record(
    estack: Stack, sim: EmporixSimulator
) -> None:
    email = "lost@example.com"
    sim.set_faults(lost_answer_rate=1.0, limit=1, path_prefix=SIGNUP)
    await pending(estack, email)
    # The answer was lost: the retried create finds the record by this registration's mark
    # before it signs up again (the 409 path is the adapter tests').
    assert [(r.status, r.lost) for r in sim.requests if r.path == SIGNUP] == [(201, True)]
    record = the_record(sim, email)
    code = latest_code(estack.settings.outbox_path, email)
    reply = await estack.registrations.submit_code(email, code)
    assert reply.outcome is ActivationOutcome.ACTIVATED
    assert the_record(sim, email)["id"] == record["id"] and len(sim.customers) == 1
    assert await login(sim, email, PASSWORD) == 200
