"""What support staff see: search attributes on the dev server, UI summaries, Prometheus metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from common.converter import data_converter
from common.identifiers import WorkflowIdMode
from tests.helpers import register, result_of, wait_for_state
from tests.ports import free_port
from tests.stack import Stack, make_settings, running_stack
from workflows import visibility
from workflows.models import RegistrationState


async def ids_matching(client: Client, query: str, expected: set[str]) -> set[str]:
    """Workflow IDs a visibility query finds (visibility is eventually consistent: poll)."""
    found: set[str] = set()
    for _ in range(100):
        found = {execution.id async for execution in client.list_workflows(query)}
        if found == expected:
            break
        await asyncio.sleep(0.1)
    return found


async def test_staff_can_find_registrations_by_status_expiry_and_number(stack: Stack) -> None:
    pending = await register(stack, "pending.pat@example.com")
    active = await register(stack, "active.ann@example.com")
    await wait_for_state(stack, "active.ann@example.com", RegistrationState.PENDING)
    await wait_for_state(stack, "pending.pat@example.com", RegistrationState.PENDING)
    await stack.registrations.submit_code(
        "active.ann@example.com", stack.code_for("active.ann@example.com")
    )
    await result_of(stack, active.registration_id)

    queue = f"TaskQueue = '{stack.settings.task_queue}'"
    soon = (datetime.now(UTC) + timedelta(hours=25)).isoformat()
    assert await ids_matching(
        stack.client,
        f"{queue} AND RegistrationStatus = 'pending' AND ActivationExpiresAt < '{soon}'",
        {pending.registration_id},
    ) == {pending.registration_id}
    assert await ids_matching(
        stack.client,
        f"{queue} AND RegistrationStatus = 'active' AND CustomerNumber = 'CUST100001'",
        {active.registration_id},
    ) == {active.registration_id}
    assert await ids_matching(
        stack.client,
        f"{queue} AND RegistrationEmail = 'pending.pat@example.com'",
        {pending.registration_id},
    ) == {pending.registration_id}
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (
        await ids_matching(
            stack.client,
            f"{queue} AND RegistrationStatus = 'pending' AND ActivationExpiresAt < '{in_an_hour}'",
            set(),
        )
        == set()
    )

    described = await stack.client.get_workflow_handle(pending.registration_id).describe()
    assert await described.static_summary() == (
        "Registration of Alice Andersson (pending.pat@example.com)"
    )


async def test_hashed_ids_keep_the_email_out_of_temporal(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, workflow_id_mode=WorkflowIdMode.HASHED)
    async for stack in running_stack(dev_env.client, settings):
        receipt = await register(stack, "hidden.hal@example.com")
        assert "hidden" not in receipt.registration_id
        await wait_for_state(stack, "hidden.hal@example.com", RegistrationState.PENDING)
        handle = stack.client.get_workflow_handle(receipt.registration_id)
        described = await handle.describe()
        assert described.typed_search_attributes.get(visibility.EMAIL) is None
        assert described.typed_search_attributes.get(visibility.STATUS) == "pending"
        assert "hidden" not in (await described.static_summary() or "")


async def test_worker_exports_registration_metrics_for_prometheus(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    settings = make_settings(tmp_path)
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        data_converter=data_converter(settings),
        runtime=runtime,
    )
    async for stack in running_stack(client, settings):
        receipt = await register(stack, "metric.mo@example.com")
        await wait_for_state(stack, "metric.mo@example.com", RegistrationState.PENDING)
        await stack.registrations.submit_code(
            "metric.mo@example.com", stack.code_for("metric.mo@example.com")
        )
        await result_of(stack, receipt.registration_id)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://{address}/metrics")).text
    assert "registrations_started" in metrics
    assert 'state="active"' in metrics
    assert "registration_activation_latency" in metrics
