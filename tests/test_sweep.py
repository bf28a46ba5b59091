"""The sweep of what compensation could not reach (``workflows/sweep.py``, issue 16): records of
terminated registrations are undone, those of running or active ones never touched; the schedule
the worker keeps; the local directory's new column on an old file; and the same against the
Hantera simulator."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import ScheduleOverlapPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.providers.local import LocalDirectory
from activities.roles import NewPrincipal
from common.identifiers import canonical_email
from tests.doubles import GatedCustomers, activation_held_at_gate
from tests.helpers import (
    PASSWORD,
    customers,
    eventually,
    identity,
    register,
    register_and_submit_code,
    wait_for_state,
)
from tests.simulators.hantera import HanteraSimulator
from tests.stack import Stack, beside, running_stack
from tests.test_hantera_e2e import (  # noqa: F401 (fixtures)
    ASSET_NEW,
    activation_code,
    calls,
    hantera_env,
    hantera_settings,
    pending,
    sim,
)
from worker import ensure_sweep_schedule, sweep_schedule_id
from workflows.models import ActivationOutcome, RegistrationState
from workflows.sweep import SweepInput, SweepStatus, SweepWorkflow


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


async def sweep(stack: Stack, grace: timedelta = timedelta(0)) -> SweepStatus:
    """One sweep run, directly (not waiting for the schedule), on the stack's worker."""
    return await stack.client.execute_workflow(
        SweepWorkflow.run,
        SweepInput(grace=grace),
        id=f"sweep-{uuid.uuid4()}",
        task_queue=stack.settings.task_queue,
    )


async def terminate(stack: Stack, email: str) -> None:
    handle = stack.client.get_workflow_handle(stack.registrations.registration_id(email))
    await handle.terminate(reason="test: terminated, so no compensation runs")


async def test_a_terminated_registrations_principal_is_swept_the_others_are_not(
    stack: Stack,
) -> None:
    terminated, waiting, active = unique("terminated"), unique("waiting"), unique("active")
    await register(stack, terminated)
    await register(stack, waiting)
    await wait_for_state(stack, terminated, RegistrationState.PENDING)
    await wait_for_state(stack, waiting, RegistrationState.PENDING)
    _, outcome = await register_and_submit_code(stack, active)
    assert outcome is ActivationOutcome.ACTIVATED
    await terminate(stack, terminated)
    logins = identity(stack)
    left = await logins.find_principal(canonical_email(terminated))
    assert left is not None and not left.active  # what the termination left behind

    # Within the grace period nothing is judged.
    fresh = await sweep(stack, grace=timedelta(minutes=15))
    assert (fresh.state, fresh.found, fresh.undone) == ("finished", 0, 0)
    assert await logins.find_principal(canonical_email(terminated)) is not None

    report = await sweep(stack)
    assert report.state == "finished"
    assert report.kinds == ["customer", "principal"]
    assert (report.found, report.undone, report.skipped, report.failed) == (2, 1, 1, 0)
    assert report.skipped_because == {"running": 1}
    assert await logins.find_principal(canonical_email(terminated)) is None
    # The pending registration's principal (its workflow runs) and the active account: untouched.
    still_pending = await logins.find_principal(canonical_email(waiting))
    assert still_pending is not None and not still_pending.active
    account = await logins.find_principal(canonical_email(active))
    assert account is not None and account.active and account.customer_id is not None
    assert await customers(stack).find_customer(canonical_email(active)) is not None
    status = await stack.registrations.status(waiting)
    assert status.state is RegistrationState.PENDING

    again = await sweep(stack)  # nothing left to undo
    assert (again.found, again.undone, again.skipped) == (1, 0, 1)


async def test_the_status_query_and_details_report_the_run(stack: Stack) -> None:
    email = unique("reported")
    await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    await terminate(stack, email)
    run_id = f"sweep-{uuid.uuid4()}"
    report = await stack.client.execute_workflow(
        SweepWorkflow.run, SweepInput(grace=timedelta(0)), id=run_id,
        task_queue=stack.settings.task_queue,
    )  # fmt: skip
    handle = stack.client.get_workflow_handle(run_id)
    queried = await handle.query(SweepWorkflow.status)
    assert queried == report
    assert (queried.found, queried.undone) == (1, 1)
    assert queried.summary() == "finished: 1 found, 1 undone, 0 skipped, 0 failed"


async def test_a_principal_without_a_registration_temporal_knows_is_left_alone(
    stack: Stack,
) -> None:
    """Created outside a registration (no workflow ID recorded, none under its email): unknown,
    skipped and named, never undone."""
    email = unique("stranger")
    new = NewPrincipal(
        id=str(uuid.uuid4()), email=email, email_canonical=canonical_email(email), name="S"
    )
    await identity(stack).create_principal(new, PASSWORD)
    report = await sweep(stack)
    assert (report.found, report.undone, report.skipped) == (1, 0, 1)
    assert report.skipped_because == {"unknown": 1}
    assert report.unknown == [f"principal {new.id} ({stack.registrations.registration_id(email)})"]
    assert await identity(stack).get_principal(new.id) is not None


@pytest.fixture
async def gated(stack: Stack) -> AsyncIterator[tuple[GatedCustomers, Stack]]:
    """A second worker whose customer creation waits at a gate once it created the customer."""
    gate = GatedCustomers(customers(stack))
    async for running in beside(stack, "g", customers=gate):
        yield gate, running
        gate.release.set()


async def test_a_customer_of_a_registration_terminated_during_activation_is_swept(
    stack: Stack, gated: tuple[GatedCustomers, Stack]
) -> None:
    gate, gated_stack = gated
    email = unique("halfway")
    _, submit = await activation_held_at_gate(gate, gated_stack, email)
    customer = await customers(stack).find_customer(canonical_email(email))
    assert customer is not None  # created, and the activation waits at the gate
    await terminate(stack, email)
    submit.cancel()

    report = await sweep(stack)
    assert (report.found, report.undone, report.failed) == (2, 2, 0)  # customer, then login
    assert await customers(stack).find_customer(canonical_email(email)) is None
    assert await identity(stack).find_principal(canonical_email(email)) is None


async def test_the_worker_keeps_the_schedule_at_the_configured_interval(stack: Stack) -> None:
    settings = stack.settings.model_copy(update={"sweep_interval": timedelta(minutes=30)})
    handle = stack.client.get_schedule_handle(sweep_schedule_id(settings))
    try:
        assert await ensure_sweep_schedule(stack.client, settings)
        described = await handle.describe()
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(minutes=30)]
        assert described.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        # The next start-up with another interval updates it.
        hourly = settings.model_copy(update={"sweep_interval": timedelta(hours=1)})
        assert await ensure_sweep_schedule(stack.client, hourly)
        described = await handle.describe()
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(hours=1)]
        # Turned off: no schedule.
        off = settings.model_copy(update={"sweep_interval": timedelta(0)})
        assert not await ensure_sweep_schedule(stack.client, off)
        with pytest.raises(RPCError) as missing:
            await handle.describe()
        assert missing.value.status is RPCStatusCode.NOT_FOUND
    finally:
        with contextlib.suppress(RPCError):  # gone already, unless an assertion failed
            await handle.delete()


async def test_an_old_directory_file_opens_and_its_customers_are_never_swept(
    tmp_path: Path,
) -> None:
    """A file from before the ``registration`` column: opened as it is (the column added), its
    customers (imported or not, nobody can tell) are never listed; its inactive principals are,
    judged by their email's registration."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE principals (id TEXT PRIMARY KEY, email TEXT NOT NULL, email_canonical"
            " TEXT NOT NULL UNIQUE, name TEXT NOT NULL, phone TEXT, locale TEXT, tenant TEXT,"
            " password_hash TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 0, customer_id TEXT,"
            " customer_number TEXT, version INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL,"
            " updated_at TEXT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE customers (id TEXT PRIMARY KEY, number TEXT NOT NULL UNIQUE, email TEXT"
            " NOT NULL, email_canonical TEXT NOT NULL UNIQUE, name TEXT, phone TEXT, tenant TEXT,"
            " created_at TEXT NOT NULL)"
        )
        then = "2020-01-01T00:00:00.000+00:00"
        conn.execute(
            "INSERT INTO principals VALUES ('p1', 'a@x.se', 'a@x.se', 'A', NULL, NULL, NULL, 'h',"
            " 0, NULL, NULL, 1, ?, ?)",
            (then, then),
        )
        conn.execute(
            "INSERT INTO customers VALUES ('c1', 'CUST100001', 'a@x.se', 'a@x.se', 'A', NULL,"
            " NULL, ?)",
            (then,),
        )
    conn.close()

    directory = LocalDirectory(path)
    try:
        now = datetime.now(UTC)
        logins = await directory.identity.list_leftovers(now, None, 10)
        records = await directory.customers.list_leftovers(now, None, 10)
    finally:
        await directory.aclose()
    assert [(r.id, r.registration) for r in logins.records] == [("p1", None)]
    assert records.records == []


# Hantera -------------------------------------------------------------------------------------


@pytest.fixture
async def hstack(
    dev_env: WorkflowEnvironment,
    hantera_env: HanteraSimulator,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    async for running in running_stack(dev_env.client, hantera_settings(tmp_path)):
        yield running


async def test_hantera_terminated_pending_registration_is_swept(
    hstack: Stack,
    sim: HanteraSimulator,  # noqa: F811 (the fixture)
) -> None:
    terminated, waiting = unique("terminated"), unique("waiting")
    await pending(hstack, terminated)
    await pending(hstack, waiting)
    await terminate(hstack, terminated)
    assert len(sim.principals) == 2

    report = await sweep(hstack)
    assert (report.found, report.undone, report.skipped, report.failed) == (2, 1, 1, 0)
    assert report.skipped_because == {"running": 1}
    assert [p["email"] for p in sim.principals.values()] == [canonical_email(waiting)]


async def test_hantera_asset_of_a_registration_terminated_during_activation_is_swept(
    hstack: Stack,
    sim: HanteraSimulator,  # noqa: F811 (the fixture)
) -> None:
    email = unique("halfway")
    await pending(hstack, email)
    code = activation_code(sim, email)
    sim.set_faults(latency_seconds=2.0, path_prefix=ASSET_NEW)  # hold the asset's creation
    submit = asyncio.create_task(hstack.registrations.submit_code(email, code))

    async def creating() -> bool:
        return len(calls(sim, "POST", ASSET_NEW)) == 1

    await eventually(creating, "asset creation started")
    await terminate(hstack, email)
    submit.cancel()

    async def created() -> bool:
        return len(sim.assets) == 1

    await eventually(created, "the held asset created")
    sim.reset_faults()

    report = await sweep(hstack)
    assert (report.found, report.undone, report.failed) == (2, 2, 0)  # asset, then principal
    assert sim.assets == {} and sim.principals == {}
