"""End to end with Norce: dev server + worker + the loopback Norce simulator over real HTTP.

Both roles on Norce (one Customer with its Account; mails to the outbox), and customers only
(identity local). Each test has its own simulator and task queue; assertions read the
simulator's state, and a finished registration's login is tried with ``LoginPost``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.providers.norce import CODE_PREFIX
from common.settings import Settings
from tests.helpers import (
    PASSWORD,
    categories,
    identity,
    register,
    result_of,
    wait_for_state,
    wrong_code,
)
from tests.simulators.loopback import point_env
from tests.simulators.norce import SERVICE, Faults, NorceSimulator, running
from tests.stack import Stack, make_settings, running_stack
from workflows.models import ActivationOutcome, RegistrationState

ACTIVATION = "customer_activation"
WELCOME = "customer_welcome"


@pytest.fixture
async def sim() -> AsyncIterator[NorceSimulator]:
    async with running(NorceSimulator(seed=7)) as simulator:
        yield simulator


@pytest.fixture
def norce_env(sim: NorceSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    point_env(monkeypatch, "REGISTRATION_NORCE_", sim.env())


def norce_settings(tmp_path: Path, **overrides: Any) -> Settings:
    roles = {"identity_provider": "norce", "customers_provider": "norce"}
    return make_settings(tmp_path / ".data", **{**roles, "mail_provider": "outbox", **overrides})


@pytest.fixture
async def nstack(
    dev_env: WorkflowEnvironment, norce_env: None, tmp_path: Path
) -> AsyncIterator[Stack]:
    async for running_ in running_stack(dev_env.client, norce_settings(tmp_path)):
        yield running_


def the_customer(sim: NorceSimulator, email: str) -> dict[str, Any]:
    found = sim.by_email(email)
    assert len(found) == 1, f"{len(found)} customers with {email} at the simulator"
    return found[0]


async def login_post(sim: NorceSimulator, login: str, password: str) -> httpx.Response:
    """``LoginPost`` as a storefront calls it, with a token of its own."""
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        token = await http.post(
            "/identity/1.0/connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
                "scope": "playground",
            },
        )
        headers = {
            "Authorization": f"Bearer {token.json()['access_token']}",
            "application-id": sim.application_id,
        }
        return await http.post(
            f"{SERVICE}/LoginPost",
            json={"LoginName": login, "Password": password},
            headers=headers,
        )


async def pending(stack: Stack, email: str) -> str:
    receipt = await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    return receipt.registration_id


async def test_happy_path_then_login_post(nstack: Stack, sim: NorceSimulator) -> None:
    email = "alice@example.com"
    registration_id = await pending(nstack, email)
    doc = the_customer(sim, email)
    assert doc["Code"].startswith(CODE_PREFIX) and doc["Account"]["IsActive"] is False
    assert sim.token_requests == 1
    assert (await login_post(sim, email, PASSWORD)).status_code == 400  # not active yet

    reply = await nstack.registrations.submit_code(email, nstack.code_for(email))
    assert reply.outcome is ActivationOutcome.ACTIVATED
    result = await result_of(nstack, registration_id)
    assert result.state is RegistrationState.ACTIVE
    assert result.customer_id == str(doc["Id"]) and not result.linked_existing_customer
    assert doc["Account"]["IsActive"] is True and len(sim.customers) == 1
    answer = await login_post(sim, email, PASSWORD)
    assert answer.status_code == 200 and answer.json()["Id"] == doc["Id"]
    assert (await login_post(sim, email, "not the password")).status_code == 400
    assert categories(nstack, email) == [ACTIVATION, WELCOME]
    # One token for the whole registration (the worker's), plus one per LoginPost above.
    assert sim.token_requests == 1 + 3


async def test_wrong_code_keeps_the_login_inactive(nstack: Stack, sim: NorceSimulator) -> None:
    email = "walter@example.com"
    await pending(nstack, email)
    reply = await nstack.registrations.submit_code(email, wrong_code(nstack.code_for(email)))
    assert reply.outcome is ActivationOutcome.INVALID_CODE
    assert the_customer(sim, email)["Account"]["IsActive"] is False
    assert (await login_post(sim, email, PASSWORD)).status_code == 400
    reply = await nstack.registrations.submit_code(email, nstack.code_for(email))
    assert reply.outcome is ActivationOutcome.ACTIVATED


async def test_cancel_while_pending_leaves_no_usable_login(
    nstack: Stack, sim: NorceSimulator
) -> None:
    email = "dave@example.com"
    registration_id = await pending(nstack, email)
    await nstack.registrations.cancel(email, reason="customer asked")
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(nstack, registration_id)
    assert isinstance(failure.value.cause, CancelledError)
    doc = the_customer(sim, email)  # no delete at Norce: inactivated
    assert doc["IsActive"] is False and doc["Account"]["IsActive"] is False
    assert (await login_post(sim, email, PASSWORD)).status_code == 400
    assert sim.count("InactivateCustomer", 200) == 1
    assert (await nstack.registrations.status(email)).state is RegistrationState.CANCELLED


async def test_failure_after_sign_up_is_compensated(nstack: Stack, sim: NorceSimulator) -> None:
    email = "fay@example.com"
    registration_id = await pending(nstack, email)
    sim.faults = Faults(
        path_prefix=f"{SERVICE}/UpdateAccountStatus",
        business_error=("AccountLocked", "The account may not be activated"),
    )
    reply = await nstack.registrations.submit_code(email, nstack.code_for(email))
    assert reply.outcome is ActivationOutcome.FAILED
    with pytest.raises(WorkflowFailureError):
        await result_of(nstack, registration_id)
    doc = the_customer(sim, email)
    assert doc["IsActive"] is False and doc["Account"]["IsActive"] is False
    assert (await login_post(sim, email, PASSWORD)).status_code == 400
    status = await nstack.registrations.status(email)
    assert status.state is RegistrationState.FAILED
    assert status.reason is not None and "InvalidRequest" in status.reason


async def test_an_email_with_an_active_account(nstack: Stack, sim: NorceSimulator) -> None:
    email = "carol@norce-e2e.example.com"  # its run stays open: an address of its own
    owner = sim.add_customer(email, "Carol", code="ERP-1", login=email, password="her own")
    await register(nstack, email)
    await wait_for_state(nstack, email, RegistrationState.ALREADY_REGISTERED)
    assert categories(nstack, email)[-1] == "customer_already_registered"
    assert sim.count("CreateCustomer3") == 0 and sim.count("UpdateCustomer3") == 0
    assert list(sim.customers.values()) == [owner]
    assert (await login_post(sim, email, "her own")).status_code == 200


async def test_an_imported_customer_is_linked_one_record(
    nstack: Stack, sim: NorceSimulator
) -> None:
    email = "bob@example.com"
    imported = sim.add_customer(email, "Bob", code="ERP-0043")
    registration_id = await pending(nstack, email)
    assert imported["Account"] is not None and imported["Account"]["IsActive"] is False
    reply = await nstack.registrations.submit_code(email, nstack.code_for(email))
    assert reply.outcome is ActivationOutcome.ACTIVATED
    result = await result_of(nstack, registration_id)
    assert result.linked_existing_customer and result.customer_id == str(imported["Id"])
    assert (await nstack.registrations.status(email)).linked_existing_customer
    assert list(sim.customers) == [imported["Id"]] and imported["Code"] == "ERP-0043"
    assert sim.count("CreateCustomer3") == 0
    assert (await login_post(sim, email, PASSWORD)).status_code == 200


async def test_cancel_of_a_bound_imported_customer_removes_only_the_login(
    nstack: Stack, sim: NorceSimulator
) -> None:
    email = "iris@example.com"
    imported = sim.add_customer(email, "Iris", code="ERP-9")
    await pending(nstack, email)
    await nstack.registrations.cancel(email, reason="customer asked")
    await wait_for_state(nstack, email, RegistrationState.CANCELLED)
    assert imported["IsActive"] is True  # the imported customer stays
    assert imported["Account"]["IsActive"] is False
    assert (await login_post(sim, email, PASSWORD)).status_code == 400
    assert sim.count("InactivateCustomer") == 0


async def test_local_identity_with_norce_customers(
    dev_env: WorkflowEnvironment, norce_env: None, sim: NorceSimulator, tmp_path: Path
) -> None:
    settings = norce_settings(tmp_path, identity_provider="local")
    email = "nora.norce@example.com"  # unique on the session's dev server
    async for stack in running_stack(dev_env.client, settings):
        registration_id = await pending(stack, email)
        assert sim.customers == {}  # the customer comes at activation
        reply = await stack.registrations.submit_code(email, stack.code_for(email))
        assert reply.outcome is ActivationOutcome.ACTIVATED
        doc = the_customer(sim, email)
        assert doc["Account"] is None and doc["Code"].startswith(CODE_PREFIX)
        principal = await identity(stack).find_principal(email)
        assert principal is not None and principal.active
        assert principal.customer_id == str(doc["Id"])
        result = await result_of(stack, registration_id)
        assert result.state is RegistrationState.ACTIVE
        assert result.customer_id == str(doc["Id"])
        assert sim.count("CreateCustomer3") == 1 and sim.count("UpdateCustomer3") == 0
