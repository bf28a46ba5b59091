"""A worker with its providers and the client API, as tests and the history recorder run it.

Keys are generated per process, as a deployment would configure them; settings are isolated from
the developer's environment (no .env, own data dir and task queue)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from google.protobuf.duration_pb2 import Duration
from pydantic import SecretStr
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.converter import DataConverter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.providers import Providers, open_providers
from common.converter import data_converter
from common.settings import Settings
from common.temporal import dev_server_path, test_server_path
from starter.client import RegistrationClient
from tests.outbox import latest_code
from worker import create_worker
from workflows import visibility

SESSION_KEYS = {
    "seal_key": SecretStr(Fernet.generate_key().decode()),
    "code_key": SecretStr(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()),
    "id_key": SecretStr(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()),
    "encryption_keys": SecretStr(
        "test-1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    ),
}


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "task_queue": f"test-{uuid.uuid4()}",
        # The tests run the workflow sandboxed (the deployment default is off): the sandbox
        # refuses a non-deterministic call the workflow makes (docs/design.md).
        "workflow_sandbox": True,
        **SESSION_KEYS,
        **overrides,
    }
    return Settings(_env_file=None, **values)


async def start_time_skipping(converter: DataConverter) -> WorkflowEnvironment:
    """The time-skipping test server, with the registration's search attributes added."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_path(), data_converter=converter
    )
    await add_search_attributes(env, env.client.namespace)
    return env


async def add_search_attributes(
    env: WorkflowEnvironment,
    namespace: str,
    keys: Iterable[SearchAttributeKey[Any]] = visibility.ALL,
) -> None:
    """Creates ``keys`` on ``namespace``, with the types the registration uses."""
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in keys
            },
        )
    )


async def bare_namespace(env: WorkflowEnvironment) -> str:
    """A new namespace without the registration's search attributes, once the server knows it."""
    namespace = f"bare-{uuid.uuid4()}"
    await env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    for _ in range(40):  # a new namespace takes a moment to be known everywhere
        with contextlib.suppress(RPCError):
            await env.client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=namespace)
            )
            return namespace
        await asyncio.sleep(0.5)
    raise AssertionError(f"namespace {namespace} never became known")


CREATE_COMMAND = re.compile(r"temporal (operator search-attribute create [^;)]*)")


async def run_create_commands(server: str, message: str) -> int:
    """Runs the ``temporal operator search-attribute create`` commands quoted in ``message`` with
    the bundled Temporal CLI against ``server``, as an operator pastes them; how many there were."""
    commands = CREATE_COMMAND.findall(message)
    for command in commands:
        process = await asyncio.create_subprocess_exec(
            dev_server_path(), *command.split(), "--address", server,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        assert process.returncode == 0, f"{command}: {output.decode()}"
    return len(commands)


async def plain_client(client: Client) -> Client:
    """Another connection to the same server without payload encryption: what a deployment with
    ``REGISTRATION_ENCRYPTION=false`` writes, readable as JSON in recorded histories."""
    return await Client.connect(
        client.service_client.config.target_host, data_converter=data_converter(None)
    )


@dataclass
class Stack:
    """A running worker with its providers, and the client API a backend would use."""

    client: Client
    settings: Settings
    providers: Providers
    registrations: RegistrationClient

    def code_for(self, email: str) -> str:
        return latest_code(self.settings.outbox_path, email)


class Remote:
    """A provider run the way a remote one is (Hantera's path): each call a regular activity
    with its own retries and timeouts, and the ``activating`` status shown while they run."""

    in_process = False

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def running_stack(
    client: Client, settings: Settings, providers: Providers | None = None, *, remote: bool = False
) -> AsyncIterator[Stack]:
    """A worker for ``settings``; ``providers`` replaces the configured ones (e.g. wrapped);
    ``remote`` runs each configured one as a remote provider (``Remote``)."""
    async with open_providers(settings) as opened:
        if remote:
            opened = Providers(
                Remote(opened.identity), Remote(opened.customers), Remote(opened.mail)
            )
        used = providers or opened
        async with create_worker(client, settings, used):
            yield Stack(client, settings, used, RegistrationClient(client, settings))


async def beside(
    stack: Stack, suffix: str, *, settings: dict[str, Any] | None = None, **providers: Any
) -> AsyncIterator[Stack]:
    """A second worker next to ``stack`` (same server, SQLite file and outbox) on a task queue of
    its own, with the named providers replaced, e.g. by wrappers that fail or wait on purpose,
    and ``settings`` changed (e.g. a policy its registrations start with)."""
    queue = f"{stack.settings.task_queue}-{suffix}"
    changed = stack.settings.model_copy(update={**(settings or {}), "task_queue": queue})
    replaced = dataclasses.replace(stack.providers, **providers)
    async for running in running_stack(stack.client, changed, replaced):
        yield running


async def on_queue_of(stack: Stack, workflow_id: str) -> AsyncIterator[Stack]:
    """A worker on the task queue ``workflow_id`` ran on, to answer queries once the worker a
    scenario ran ``beside`` the stack has stopped."""
    description = await stack.client.get_workflow_handle(workflow_id).describe()
    if description.task_queue == stack.settings.task_queue:
        yield stack
        return
    settings = stack.settings.model_copy(update={"task_queue": description.task_queue})
    async for running in running_stack(stack.client, settings, stack.providers):
        yield running
