"""End to end with Hantera: dev server + worker + the loopback Hantera simulator over real HTTP.

Every role on Hantera (as in Hantera's customer-registration guide: an inactive IAM principal, the
activation code as a sending, a customer asset numbered CUST100001, the principal PUT back
activated and linked under its etag), plus one mixed composition. Each test has its own simulator
(fresh numbers) and its own task queue; assertions read the simulator's state, not our own view.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.errors import InvalidRequest
from activities.identity import ACTIVATION_READS
from activities.providers.hantera import CLIENT_GRANT_TYPES, HanteraCustomers
from common.settings import Settings
from starter.client import InvalidInput
from tests.helpers import (
    PASSWORD,
    eventually,
    identity,
    nothing_started,
    register,
    result_of,
    wait_for_state,
)
from tests.outbox import CODE_LINE, messages_to
from tests.simulators.hantera import (
    GUIDE_GRANT_TYPES,
    HanteraSimulator,
    RecordedRequest,
    running,
)
from tests.simulators.loopback import point_env
from tests.stack import Stack, make_settings, running_stack
from workflows.models import ActivationOutcome, ActivationReply, RegistrationState

PRINCIPALS = "/resources/iam/principals"
ASSET_NEW = "/resources/actors/asset/new"
GRAPH = "/resources/graph"
ACTIVATION = "customer_activation"
WELCOME = "customer_welcome"


# Fixtures -------------------------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[HanteraSimulator]:
    async with running(HanteraSimulator(seed=1, grant_types=CLIENT_GRANT_TYPES)) as simulator:
        yield simulator


@pytest.fixture
def hantera_env(
    sim: HanteraSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> HanteraSimulator:
    """REGISTRATION_HANTERA_* point at this test's simulator, and nothing else of the developer's
    (no other such variable, no .env in the working directory) leaks in."""
    monkeypatch.chdir(tmp_path)
    point_env(monkeypatch, "REGISTRATION_HANTERA_", sim.env())
    return sim


def hantera_settings(tmp_path: Path, **overrides: Any) -> Settings:
    roles = {"identity_provider": "hantera", "customers_provider": "hantera"}
    return make_settings(tmp_path / ".data", **{**roles, "mail_provider": "hantera", **overrides})


@pytest.fixture
async def hstack(
    dev_env: WorkflowEnvironment, hantera_env: HanteraSimulator, tmp_path: Path
) -> AsyncIterator[Stack]:
    """Worker on the dev server with all three roles on the simulator."""
    async for running_ in running_stack(dev_env.client, hantera_settings(tmp_path)):
        yield running_


@pytest.fixture
async def time_hstack(
    time_env: WorkflowEnvironment, hantera_env: HanteraSimulator, tmp_path: Path
) -> AsyncIterator[Stack]:
    """The same on the time-skipping server."""
    async for running_ in running_stack(time_env.client, hantera_settings(tmp_path)):
        yield running_


# Helpers --------------------------------------------------------------------------------------


def sendings_to(sim: HanteraSimulator, email: str) -> list[dict[str, Any]]:
    return [s for s in sim.sendings if str(s["to"]).lower() == email.lower()]


def activation_code(sim: HanteraSimulator, email: str) -> str:
    """The code of the newest activation sending to ``email``: its plainText line of 6 digits."""
    sent = [s for s in sendings_to(sim, email) if s["category"] == ACTIVATION]
    assert sent, f"no {ACTIVATION} sending to {email}"
    codes = [line for line in sent[-1]["plainText"].splitlines() if CODE_LINE.fullmatch(line)]
    assert len(codes) == 1, f"expected one code line, found {codes}"
    return str(codes[0])


def the_principal(sim: HanteraSimulator, email: str) -> dict[str, Any]:
    found = [p for p in sim.principals.values() if p["email"].lower() == email.lower()]
    assert len(found) == 1, f"{len(found)} principals with {email} at the simulator"
    return found[0]


def calls(sim: HanteraSimulator, method: str, path: str) -> list[RecordedRequest]:
    return [r for r in sim.requests if r.method == method and r.path == path]


def asset_deletes(sim: HanteraSimulator) -> list[RecordedRequest]:
    return [
        r
        for r in sim.requests
        if r.method == "POST"
        and r.path.startswith("/resources/actors/asset/")
        and r.path != ASSET_NEW
    ]


async def pending(stack: Stack, email: str, name: str = "Alice Andersson") -> str:
    receipt = await register(stack, email, name)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    return receipt.registration_id


# 1. Happy path --------------------------------------------------------------------------------


async def failed_for_good(
    hstack: Stack, registration_id: str, reply: ActivationReply
) -> ApplicationError:
    """The code was answered ``failed`` and the registration ended ``RegistrationFailed``: its
    cause, for the test's own checks."""
    assert reply.outcome is ActivationOutcome.FAILED
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(hstack, registration_id)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RegistrationFailed"
    return cause


async def test_happy_path_all_roles_on_hantera(hstack: Stack, sim: HanteraSimulator) -> None:
    email, canonical = "Alice.Andersson@Example.COM", "alice.andersson@example.com"
    registration_id = await pending(hstack, email)

    # The principal: created inactive, customer role, the chosen password set by reset + change.
    principal = the_principal(sim, canonical)
    principal_id, etag_when_pending = principal["id"], principal["etag"]
    assert principal["email"] == canonical
    assert principal["name"] == "Alice Andersson"
    assert principal["roles"] == ["customer"]
    assert principal["properties"]["activated"] is False
    assert "actorId" not in principal["properties"]
    assert sim.passwords[principal_id] == PASSWORD
    flow = [(r.method, r.path, r.status) for r in sim.requests]
    reset = flow.index(("POST", f"{PRINCIPALS}/{principal_id}/password/reset", 200))
    change = flow.index(("POST", "/resources/me/password", 200))
    assert flow.index(("PUT", f"{PRINCIPALS}/{principal_id}", 200)) < reset < change
    assert all(PASSWORD not in repr(r.body) for r in sim.requests)  # never recorded in clear
    assert (await hstack.registrations.status(canonical)).principal_id == principal_id

    # The activation code, as a sending of the guide's category; the code only in the bodies.
    (sending,) = sim.sendings
    assert sending["category"] == ACTIVATION
    assert sending["to"] == email
    code = activation_code(sim, canonical)
    assert code in sending["html"]
    assert code not in repr(sending["dynamic"])
    assert sim.assets == {}

    reply = await hstack.registrations.submit_code(canonical, code)
    assert reply.outcome is ActivationOutcome.ACTIVATED

    # A customer asset numbered from the type's prefix, with the dynamic email and name.
    (asset,) = sim.assets.values()
    assert asset["typeKey"] == "customer"
    assert asset["assetNumber"] == "CUST100001"
    assert asset["dynamic"]["email"] == canonical
    assert asset["dynamic"]["name"] == "Alice Andersson"
    # The principal PUT back activated, linked to the asset, guarded by the etag it had.
    create_put, activate_put = calls(sim, "PUT", f"{PRINCIPALS}/{principal_id}")
    assert "if-match" not in create_put.headers
    assert activate_put.status == 200
    assert activate_put.headers["if-match"].strip('"') == etag_when_pending
    assert activate_put.body["properties"]["activated"] is True
    assert activate_put.body["properties"]["actorId"] == asset["assetId"]
    activated = sim.principals[principal_id]
    assert activated["properties"]["activated"] is True
    assert activated["properties"]["actorId"] == asset["assetId"]
    assert activated["properties"]["customerNumber"] == "CUST100001"
    assert activated["roles"] == ["customer"]
    assert sim.passwords[principal_id] == PASSWORD  # the activation did not touch the login

    status = await hstack.registrations.status(canonical)
    assert status.state is RegistrationState.ACTIVE
    assert status.customer_id == asset["assetId"]
    assert status.customer_number == "CUST100001"
    assert not status.linked_existing_customer
    result = await result_of(hstack, registration_id)
    assert result.state is RegistrationState.ACTIVE
    assert (result.principal_id, result.customer_id) == (principal_id, asset["assetId"])
    # The welcome sending (after the update answered, before the workflow ended).
    assert [s["category"] for s in sim.sendings] == [ACTIVATION, WELCOME]
    assert sim.sendings[-1]["to"] == email
    assert "CUST100001" in sim.sendings[-1]["plainText"]


# 2. Linking an imported customer --------------------------------------------------------------


async def test_links_an_imported_customer_asset(hstack: Stack, sim: HanteraSimulator) -> None:
    imported = sim.add_asset("customer", {"email": "bob@example.com", "name": "Bob (imported)"})
    registration_id = await pending(hstack, "Bob@Example.com", "Bob Builder")

    code = activation_code(sim, "bob@example.com")
    reply = await hstack.registrations.submit_code("bob@example.com", code)
    assert reply.outcome is ActivationOutcome.ACTIVATED

    assert list(sim.assets) == [imported["assetId"]]  # no new asset
    assert calls(sim, "POST", ASSET_NEW) == []
    assert sim.assets[imported["assetId"]]["dynamic"] == {
        "email": "bob@example.com",
        "name": "Bob (imported)",
    }
    principal = the_principal(sim, "bob@example.com")
    assert principal["properties"]["activated"] is True
    assert principal["properties"]["actorId"] == imported["assetId"]
    assert principal["properties"]["customerNumber"] == imported["assetNumber"]
    status = await hstack.registrations.status("bob@example.com")
    assert status.state is RegistrationState.ACTIVE
    assert status.linked_existing_customer
    assert status.customer_id == imported["assetId"]
    result = await result_of(hstack, registration_id)
    assert result.state is RegistrationState.ACTIVE and result.linked_existing_customer


# 3. Expiry ------------------------------------------------------------------------------------


async def test_expiry_deletes_the_pending_principal_at_hantera(
    time_env: WorkflowEnvironment, time_hstack: Stack, sim: HanteraSimulator
) -> None:
    email = "tess@example.com"
    registration_id = await pending(time_hstack, email)
    principal_id = the_principal(sim, email)["id"]
    code = activation_code(sim, email)

    await time_env.sleep(timedelta(hours=24, minutes=1))

    result = await result_of(time_hstack, registration_id)
    assert result.state is RegistrationState.EXPIRED
    assert sim.principals == {}
    assert [r.status for r in calls(sim, "DELETE", f"{PRINCIPALS}/{principal_id}")] == [200]
    assert sim.assets == {}
    assert [s["category"] for s in sim.sendings] == [ACTIVATION]
    reply = await time_hstack.registrations.submit_code(email, code)
    assert reply.outcome is ActivationOutcome.EXPIRED


# 4. Cancellation ------------------------------------------------------------------------------


async def test_cancel_while_pending_deletes_the_principal(
    hstack: Stack, sim: HanteraSimulator
) -> None:
    email = "dave@example.com"
    registration_id = await pending(hstack, email)
    principal_id = the_principal(sim, email)["id"]

    await hstack.registrations.cancel(email, reason="customer asked")
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(hstack, registration_id)
    assert isinstance(failure.value.cause, CancelledError)

    assert sim.principals == {}
    assert [r.status for r in calls(sim, "DELETE", f"{PRINCIPALS}/{principal_id}")] == [200]
    assert sim.assets == {}
    status = await hstack.registrations.status(email)
    assert status.state is RegistrationState.CANCELLED


async def test_cancel_while_the_asset_is_being_created_undoes_asset_and_principal(
    hstack: Stack, sim: HanteraSimulator
) -> None:
    email = "erin@example.com"
    registration_id = await pending(hstack, email)
    code = activation_code(sim, email)
    # Hold the asset creation: the simulator waits before it creates and answers.
    sim.set_faults(latency_seconds=2.0, path_prefix=ASSET_NEW)

    submit = asyncio.create_task(hstack.registrations.submit_code(email, code))

    async def creating() -> bool:
        return len(calls(sim, "POST", ASSET_NEW)) == 1

    await eventually(creating, "asset creation started")
    (create,) = calls(sim, "POST", ASSET_NEW)
    await hstack.registrations.cancel(email, reason="changed their mind")
    assert create.status == 0, "the cancel must arrive while the create is still unanswered"

    reply = await submit
    assert reply.outcome is ActivationOutcome.NOT_PENDING
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(hstack, registration_id)
    assert isinstance(failure.value.cause, CancelledError)

    # The held create went through (one asset was numbered) and was deleted again.
    assert create.status == 200
    assert sim.asset_types["customer"].last_number == 100001
    assert sim.assets == {}
    deleted = [r for r in asset_deletes(sim) if r.status == 200]
    assert len(deleted) == 1 and deleted[0].body == [{"type": "delete"}]
    # The principal too, and it was never activated.
    assert sim.principals == {}
    principal_puts = [
        r for r in sim.requests if r.method == "PUT" and r.path.startswith(PRINCIPALS)
    ]
    assert len(principal_puts) == 1  # the create; no activation was attempted
    assert principal_puts[0].body["properties"]["activated"] is False
    assert [s["category"] for s in sim.sendings] == [ACTIVATION]
    status = await hstack.registrations.status(email)
    assert status.state is RegistrationState.CANCELLED


# 5. Etag conflicts ----------------------------------------------------------------------------


async def test_principal_that_keeps_changing_fails_the_registration_and_compensates(
    hstack: Stack, sim: HanteraSimulator
) -> None:
    email = "frank@example.com"
    registration_id = await pending(hstack, email)
    principal_id = the_principal(sim, email)["id"]
    # Every conditional write of the activation loses the race against another writer.
    sim.set_faults(concurrent_principal_writes=ACTIVATION_READS + 5)

    reply = await hstack.registrations.submit_code(email, activation_code(sim, email))
    cause = await failed_for_good(hstack, registration_id, reply)
    assert "ConcurrentModification" in str(cause)

    # Exactly ACTIVATION_READS conditional PUTs, all 412: re-read, then a non-retryable end.
    puts = calls(sim, "PUT", f"{PRINCIPALS}/{principal_id}")
    conditional = [r for r in puts if r.headers.get("if-match")]
    assert [r.status for r in conditional] == [412] * ACTIVATION_READS
    assert sim.faults.concurrent_principal_writes == 5
    # The asset it created is deleted again, and the principal too.
    assert len([r for r in calls(sim, "POST", ASSET_NEW) if r.status == 200]) == 1
    assert sim.assets == {}
    assert len([r for r in asset_deletes(sim) if r.status == 200]) == 1
    assert sim.principals == {}
    assert [s["category"] for s in sim.sendings] == [ACTIVATION]
    status = await hstack.registrations.status(email)
    assert status.state is RegistrationState.FAILED
    assert status.reason is not None and "ConcurrentModification" in status.reason


async def test_one_concurrent_change_is_reread_kept_and_activation_succeeds(
    hstack: Stack, sim: HanteraSimulator
) -> None:
    email = "grace@example.com"
    registration_id = await pending(hstack, email)
    principal_id = the_principal(sim, email)["id"]
    sim.set_faults(concurrent_principal_writes=1)

    reply = await hstack.registrations.submit_code(email, activation_code(sim, email))
    assert reply.outcome is ActivationOutcome.ACTIVATED

    puts = calls(sim, "PUT", f"{PRINCIPALS}/{principal_id}")
    assert [(bool(r.headers.get("if-match")), r.status) for r in puts] == [
        (False, 200),  # create
        (True, 412),  # lost the race
        (True, 200),  # re-read, written under the new etag
    ]
    (asset,) = sim.assets.values()
    principal = sim.principals[principal_id]
    assert principal["properties"]["activated"] is True
    assert principal["properties"]["actorId"] == asset["assetId"]
    assert principal["properties"]["concurrentWrites"] == 1  # the other writer's change is kept
    result = await result_of(hstack, registration_id)
    assert result.state is RegistrationState.ACTIVE
    assert result.customer_id == asset["assetId"]


async def test_failure_after_creation_deletes_the_asset_the_graph_does_not_show_yet(
    hstack: Stack, sim: HanteraSimulator
) -> None:
    """Hantera names the asset itself; while its graph has not indexed it, the up-front undo by
    the registration's own customer id finds nothing, so only the undo by the id Hantera gave
    (``_undo_created_customer``) can delete it."""
    email = "judy@example.com"
    registration_id = await pending(hstack, email)
    sim.set_faults(concurrent_principal_writes=ACTIVATION_READS + 5, graph_lag_queries=10)

    reply = await hstack.registrations.submit_code(email, activation_code(sim, email))
    await failed_for_good(hstack, registration_id, reply)

    assert sim.asset_types["customer"].last_number == 100001  # one asset was created...
    assert sim.assets == {}  # ...and deleted
    (deleted,) = [r for r in asset_deletes(sim) if r.status == 200]
    assert deleted.body == [{"type": "delete"}]
    assert sim.principals == {}
    status = await hstack.registrations.status(email)
    assert status.state is RegistrationState.FAILED


# 6. Transient errors --------------------------------------------------------------------------


def served(sim: HanteraSimulator, method: str, path: str, status: int) -> int:
    return sum(1 for r in calls(sim, method, path) if r.status == status)


async def test_transient_errors_are_retried_to_an_active_registration(
    hstack: Stack, sim: HanteraSimulator
) -> None:
    """503s, a 429 with ``Retry-After`` and a dropped answer (the activation done, its answer
    lost), each switched on for one path and off again: the registration ends active, with one
    principal and one asset."""
    email = "ivan@example.com"
    sim.set_faults(error_rate=1.0, path_prefix=PRINCIPALS)
    receipt = await register(hstack, email)

    async def lookup_retried() -> bool:
        return served(sim, "GET", PRINCIPALS, 503) >= 2

    await eventually(lookup_retried, "the principal lookup retried through 503s")
    sim.reset_faults()
    await wait_for_state(hstack, email, RegistrationState.PENDING)
    principal_id = the_principal(sim, email)["id"]
    principal_path = f"{PRINCIPALS}/{principal_id}"

    sim.set_faults(rate_limit_rate=1.0, retry_after_seconds=1, path_prefix=GRAPH)
    submit = asyncio.create_task(
        hstack.registrations.submit_code(email, activation_code(sim, email))
    )

    async def rate_limited() -> bool:
        return served(sim, "POST", GRAPH, 429) >= 1

    await eventually(rate_limited, "the customer lookup rate limited")
    # Next: the activation PUT is handled, but its answer never arrives.
    sim.reset_faults()
    sim.set_faults(lost_answer_rate=1.0, path_prefix=principal_path, method="PUT")

    async def activated() -> bool:
        return sim.principals[principal_id]["properties"].get("activated") is True

    await eventually(activated, "the activation PUT handled")
    sim.reset_faults()

    reply = await submit
    assert reply.outcome is ActivationOutcome.ACTIVATED
    result = await result_of(hstack, receipt.registration_id)
    assert result.state is RegistrationState.ACTIVE
    (asset,) = sim.assets.values()
    principal = the_principal(sim, email)
    assert principal["properties"]["actorId"] == asset["assetId"] == result.customer_id
    # One activation PUT wrote: its repeats were refused (412, its etag had changed), and a read
    # of the principal found it active and linked.
    activation, *repeats = [
        r for r in calls(sim, "PUT", principal_path) if r.headers.get("if-match")
    ]
    assert activation.status == 200 and activation.lost
    assert repeats and all(r.status == 412 for r in repeats)
    later = sim.requests[sim.requests.index(activation) + 1 :]
    assert any(r.method == "GET" and r.path == principal_path for r in later)
    assert [s["category"] for s in sim.sendings] == [ACTIVATION, WELCOME]


async def test_a_client_without_the_password_grant_holds_registrations_until_fixed(
    hstack: Stack, sim: HanteraSimulator
) -> None:
    """Set up exactly as the guide's step 2, the client may not take the token that sets the
    password: a setup error, retried (the registration waits, it does not fail) until the
    client gets the password grant."""
    sim.grant_types = GUIDE_GRANT_TYPES
    email = "kim@example.com"
    await register(hstack, email)

    async def refused_twice() -> bool:
        return served(sim, "POST", "/oauth/token", 400) >= 2

    await eventually(refused_twice, "the password grant refused, and retried")
    assert (await hstack.registrations.status(email)).state is RegistrationState.STARTING

    sim.grant_types = CLIENT_GRANT_TYPES
    await wait_for_state(hstack, email, RegistrationState.PENDING)
    assert sim.passwords[the_principal(sim, email)["id"]] == PASSWORD


# 7. Mixed composition -------------------------------------------------------------------------


async def test_local_identity_hantera_customers_outbox_mail(
    dev_env: WorkflowEnvironment, hantera_env: HanteraSimulator, tmp_path: Path
) -> None:
    sim = hantera_env
    settings = hantera_settings(tmp_path, identity_provider="local", mail_provider="outbox")
    # Unique on the session's dev server: test_registration_flow leaves heidi@ pending there.
    email = "heidi.hybrid@example.com"
    async for stack in running_stack(dev_env.client, settings):
        registration_id = await pending(stack, email, "Heidi Hantera")
        reply = await stack.registrations.submit_code(email, stack.code_for(email))
        assert reply.outcome is ActivationOutcome.ACTIVATED

        (asset,) = sim.assets.values()
        assert asset["assetNumber"] == "CUST100001"
        assert asset["dynamic"]["email"] == email
        principal = await identity(stack).find_principal(email)  # in SQLite
        assert principal is not None and principal.active
        assert principal.customer_id == asset["assetId"]
        assert await identity(stack).verify_password(principal.id, PASSWORD)
        result = await result_of(stack, registration_id)
        assert result.state is RegistrationState.ACTIVE
        assert result.customer_id == asset["assetId"]
        assert sim.principals == {} and sim.sendings == []  # only the customers role remote
        categories = [str(m["X-Category"]) for m in messages_to(settings.outbox_path, email)]
        assert categories == [ACTIVATION, WELCOME]


# 8. Injection through the email ---------------------------------------------------------------


async def test_injection_with_spaces_is_refused_at_the_client_and_by_the_adapter(
    hstack: Stack, sim: HanteraSimulator
) -> None:
    injection = "x' or '1'=='1@evil.test"
    victim = sim.add_asset("customer", {"email": "victim@example.com", "name": "Victim"})

    with pytest.raises(InvalidInput) as refused:
        await register(hstack, injection)
    assert refused.value.field == "email"
    assert await nothing_started(hstack, injection)
    assert sim.requests == []

    # The adapter itself, given the value anyway, never builds a filter from it.
    customers = hstack.providers.customers
    assert isinstance(customers, HanteraCustomers)
    with pytest.raises(InvalidRequest, match="quote") as err:
        await customers.find_customer(injection)
    assert err.value.non_retryable
    assert sim.graph_filters == []
    assert await customers.find_customer("victim@example.com") is not None
    assert sim.graph_filters == ["dynamic.email == 'victim@example.com'"]
    assert list(sim.assets) == [victim["assetId"]]


async def test_injection_that_passes_validation_links_no_other_customer(
    hstack: Stack, sim: HanteraSimulator
) -> None:
    """An address Hantera's graph filter cannot quote fails the registration at its first step
    (the provider's declared ``email_rule``): nothing is created, mailed or queried."""
    injection = "x'or'1'=='1@example.com"  # valid RFC 5322 atext, so our validator lets it in
    victim = sim.add_asset("customer", {"email": "victim@example.com", "name": "Victim"})
    receipt = await register(hstack, injection)  # the client does not know the providers
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(hstack, receipt.registration_id)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RegistrationFailed"
    assert "email: cannot be used with the hantera provider" in str(cause)
    assert sim.graph_filters == []  # the value never reached Hantera's graph
    assert sim.principals == {} and sendings_to(sim, injection) == []
    assert list(sim.assets) == [victim["assetId"]]  # nothing created, the victim untouched
    status = await hstack.registrations.status(injection)
    assert status.state is RegistrationState.FAILED
    assert status.reason is not None and "InvalidRequest" in status.reason
    assert injection not in status.reason
