"""The worker's start-up failures: one line naming what to fix, an exit code, no traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

import worker
from common.settings import InvalidSettings
from tests.helpers import PASSWORD
from tests.ports import free_port
from tests.stack import SESSION_KEYS, bare_namespace, make_settings, run_create_commands
from workflows import visibility

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def worker_environment(data_dir: Path, **variables: str) -> dict[str, str]:
    return {
        **os.environ,
        "REGISTRATION_DATA_DIR": str(data_dir),
        "REGISTRATION_METRICS_BIND_ADDRESS": "",
        **variables,
    }


async def start_worker(data_dir: Path, *args: str, **variables: str) -> tuple[int, str]:
    """``python worker.py`` as an operator starts it; its exit code and log."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", *args, cwd=REPO, env=worker_environment(data_dir, **variables),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        kill_group(process)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def kill_group(process: asyncio.subprocess.Process) -> None:
    """Kills what is left of a worker started in a session of its own, its dev server included
    (after a failed test: a worker that stops leaves nothing)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def stops_with_one_line(log: str, line: str) -> bool:
    """Whether the worker stopped with one error line, the one expected, and no traceback."""
    errors = [entry for entry in log.splitlines() if " ERROR " in entry]
    return len(errors) == 1 and line in errors[0] and "Traceback" not in log


@pytest.mark.parametrize("taken", ["dev_server_port", "dev_ui_port", "codec_server_port"])
async def test_a_taken_port_is_named_by_its_variable(
    tmp_path: Path, taken_port: int, taken: str
) -> None:
    ports = {
        field: str(free_port()) for field in ("dev_server_port", "dev_ui_port", "codec_server_port")
    }
    ports[taken] = str(taken_port)
    code, log = await start_worker(
        tmp_path,
        "--dev",
        **{f"REGISTRATION_{field.upper()}": port for field, port in ports.items()},
    )
    assert code == 2
    assert f"REGISTRATION_{taken.upper()}: cannot listen: Address already in use" in log
    assert str(taken_port) in log
    assert "Traceback" not in log and "ready;" not in log


async def test_an_unreachable_server_is_named_and_dev_keys_are_made(tmp_path: Path) -> None:
    """The worker alone generates dev keys, on its first start, so ``make run`` works from a fresh
    clone: even a start that then fails leaves them for the next."""
    code, log = await start_worker(tmp_path, TEMPORAL_ADDRESS="127.0.0.1:9")
    assert code == 3
    assert "cannot reach the Temporal server at 127.0.0.1:9 (TEMPORAL_ADDRESS)" in log
    assert "Traceback" not in log
    assert sorted(path.name for path in (tmp_path / "keys").iterdir()) == [
        "code.key",
        "payload.key",
        "seal.key",
    ]


@pytest.mark.parametrize(
    ("variables", "line"),
    [
        ({"REGISTRATION_DEV_SERVER_PORT": "99999"}, "REGISTRATION_DEV_SERVER_PORT: "),
        ({"REGISTRATION_CODEC_SERVER_PORT": "70000"}, "REGISTRATION_CODEC_SERVER_PORT: "),
        ({"REGISTRATION_OUTBOX_DIR": "/proc/outbox"}, "REGISTRATION_OUTBOX_DIR: cannot write"),
        (
            {"REGISTRATION_CODEC_SERVER_HOST": "192.0.2.1"},
            "REGISTRATION_CODEC_SERVER_TOKEN: not set",
        ),
        ({"REGISTRATION_METRICS_BIND_ADDRESS": "garbage"}, "REGISTRATION_METRICS_BIND_ADDRESS="),
        ({"TEMPORAL_PROFILE": "nope"}, "TEMPORAL_PROFILE: no profile 'nope'"),
        (
            {"TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent/cert.pem"},
            "TEMPORAL_TLS_CLIENT_CERT_PATH",
        ),
    ],
)
async def test_a_bad_setting_stops_the_worker_with_one_line_naming_it(
    tmp_path: Path, variables: dict[str, str], line: str
) -> None:
    """``--dev`` where it matters (the codec server runs only there); the Temporal variables are
    read without it."""
    args = () if any(name.startswith("TEMPORAL_") for name in variables) else ("--dev",)
    ports = {
        f"REGISTRATION_{field.upper()}": str(free_port())
        for field in ("dev_server_port", "dev_ui_port", "codec_server_port")
    }
    code, log = await start_worker(
        tmp_path, *args, TEMPORAL_ADDRESS="127.0.0.1:9", **{**ports, **variables}
    )
    assert code == 2, log
    assert stops_with_one_line(log, f"configuration error: {line}"), log
    assert "ready;" not in log


async def test_a_taken_metrics_port_is_named(tmp_path: Path, taken_port: int) -> None:
    """A second worker on the same host: the first holds the Prometheus port."""
    address = f"127.0.0.1:{taken_port}"
    code, log = await start_worker(
        tmp_path, REGISTRATION_METRICS_BIND_ADDRESS=address, TEMPORAL_ADDRESS="127.0.0.1:9"
    )
    assert code == 2
    assert stops_with_one_line(log, f"REGISTRATION_METRICS_BIND_ADDRESS={address}: "), log
    assert "Address already in use" in log


@pytest.mark.parametrize("where", ["/proc/data", "a-file/data"])
@pytest.mark.parametrize("keys", ["generated", "configured"])
async def test_a_data_folder_that_cannot_be_made_is_named(
    tmp_path: Path, where: str, keys: str
) -> None:
    """Written for generated dev keys, and by ``--dev`` for the dev server's file."""
    (tmp_path / "a-file").write_text("not a folder")
    configured = {
        f"REGISTRATION_{name.upper()}": key.get_secret_value() for name, key in SESSION_KEYS.items()
    }
    code, log = await start_worker(
        tmp_path / where,
        *(("--dev",) if keys == "configured" else ()),
        TEMPORAL_ADDRESS="127.0.0.1:9",
        REGISTRATION_OUTBOX_DIR=str(tmp_path / "outbox"),
        REGISTRATION_DATABASE=str(tmp_path / "directory.sqlite3"),
        **(configured if keys == "configured" else {}),
        **{
            f"REGISTRATION_{field.upper()}": str(free_port())
            for field in ("dev_server_port", "dev_ui_port", "codec_server_port")
        },
    )
    assert code == 2
    assert stops_with_one_line(log, "configuration error: REGISTRATION_DATA_DIR: cannot write"), log


async def test_a_namespace_the_server_lacks_is_named(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    server = dev_env.client.service_client.config.target_host
    code, log = await start_worker(tmp_path, TEMPORAL_ADDRESS=server, TEMPORAL_NAMESPACE="nope")
    assert code == 2
    assert stops_with_one_line(log, "TEMPORAL_NAMESPACE: "), log
    assert f"the Temporal server at {server} has no namespace 'nope'" in log


async def test_a_namespace_without_the_search_attributes_stops_the_worker_until_created(
    tmp_path: Path, dev_env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    """``register`` finds only the attributes a start sets; the others would stall every
    registration at its first upsert, so the worker checks them all before it starts."""
    server, namespace = (
        dev_env.client.service_client.config.target_host,
        await bare_namespace(dev_env),
    )
    code, log = await start_worker(tmp_path, TEMPORAL_ADDRESS=server, TEMPORAL_NAMESPACE=namespace)
    assert code == 2
    assert stops_with_one_line(log, "configuration error: REGISTRATION_SEARCH_ATTRIBUTES: "), log
    for key in visibility.ALL:
        assert f"namespace {namespace!r} lacks {key.name}" in log
    assert await run_create_commands(server, log) == len(visibility.ALL)
    settings = make_settings(tmp_path)
    client = await Client.connect(server, namespace=namespace)
    await worker.check_search_attributes(client, settings)  # now it starts
    # With the setting off it starts, and warns that the processes that start registrations
    # need it off too (they decide whether a registration uses the attributes).
    bare = await Client.connect(server, namespace=await bare_namespace(dev_env))
    with caplog.at_level(logging.WARNING, logger="worker"):
        await worker.check_search_attributes(bare, make_settings(tmp_path, search_attributes=False))
    assert "REGISTRATION_SEARCH_ATTRIBUTES=false here, but namespace" in caplog.text
    assert "registrations started where it is true (the default) would stall" in caplog.text


async def test_a_search_attribute_of_another_type_stops_the_worker(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    namespace = await bare_namespace(dev_env)
    kinds = {key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in visibility.ALL}
    kinds[visibility.CUSTOMER_NUMBER.name] = IndexedValueType.INDEXED_VALUE_TYPE_TEXT
    await dev_env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=namespace, search_attributes=kinds)
    )
    server = dev_env.client.service_client.config.target_host
    client = await Client.connect(server, namespace=namespace)
    with pytest.raises(InvalidSettings, match="CustomerNumber is Text where Keyword is needed"):
        await worker.check_search_attributes(client, make_settings(tmp_path))


async def test_a_dev_server_that_does_not_start_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "temporal.sqlite3").write_bytes(b"not a database" * 1000)
    ports = {
        f"REGISTRATION_{field.upper()}": str(free_port())
        for field in ("dev_server_port", "dev_ui_port", "codec_server_port")
    }
    code, log = await start_worker(tmp_path, "--dev", **ports)
    assert code == 3
    assert stops_with_one_line(log, f"state is {tmp_path / 'temporal.sqlite3'}"), log


class RunningWorker:
    """``python worker.py --dev`` running, its log read as it is written."""

    def __init__(self, process: asyncio.subprocess.Process, ports: dict[str, int]) -> None:
        self.process = process
        self.ports = ports
        self.log = ""

    async def wait_for(self, text: str, seconds: float = 30) -> None:
        assert self.process.stderr is not None
        try:
            async with asyncio.timeout(seconds):
                while text not in self.log:
                    line = await self.process.stderr.readline()
                    assert line, f"the worker ended before logging {text!r}:\n{self.log}"
                    self.log += line.decode()
        except TimeoutError:
            raise AssertionError(f"no {text!r} in {seconds} s:\n{self.log}") from None

    async def exit_code(self, seconds: float) -> int:
        """Waits up to ``seconds`` for the worker to end, reading the rest of its log."""
        assert self.process.stderr is not None
        try:
            async with asyncio.timeout(seconds):
                while line := await self.process.stderr.readline():
                    self.log += line.decode()
                return await self.process.wait()
        except TimeoutError:
            raise AssertionError(f"still running after {seconds} s:\n{self.log}") from None


@pytest.fixture
async def dev_worker(tmp_path: Path) -> AsyncIterator[RunningWorker]:
    ports = {
        field: free_port() for field in ("dev_server_port", "dev_ui_port", "codec_server_port")
    }
    variables = {f"REGISTRATION_{field.upper()}": str(port) for field, port in ports.items()}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", "--dev", cwd=REPO,
        env=worker_environment(tmp_path, **variables), stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, with the dev server it starts
    )  # fmt: skip
    worker = RunningWorker(process, ports)
    try:
        yield worker
    finally:
        kill_group(process)
        await process.wait()


async def register_with_a_failing_outbox(worker: RunningWorker, data_dir: Path) -> None:
    """A registration whose activation mail (a local activity) fails on every attempt: the
    outbox folder became a file after the start-up check."""
    await worker.wait_for("ready;")
    (data_dir / "outbox").rmdir()
    (data_dir / "outbox").write_text("not a folder")
    starter = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "register", "--email", "ann@example.com",
        "--name", "Ann", "--password-stdin", cwd=REPO, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=worker_environment(
            data_dir, TEMPORAL_ADDRESS=f"127.0.0.1:{worker.ports['dev_server_port']}"
        ),
    )  # fmt: skip
    await asyncio.wait_for(starter.communicate(f"{PASSWORD}\n".encode()), 60)
    assert starter.returncode == 0
    await worker.wait_for("cannot write to outbox")  # the local activity has failed once


def dev_server_stopped(worker: RunningWorker) -> bool:
    try:
        socket.create_connection(("127.0.0.1", worker.ports["dev_server_port"]), 1).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_a_local_activity_that_keeps_failing_does_not_keep_the_worker_running(
    dev_worker: RunningWorker, tmp_path: Path
) -> None:
    """sdk-core retries a failing local activity after a shutdown request (temporalio/sdk-rust
    #709): the shutdown has a deadline, then the worker and its dev server stop anyway."""
    await register_with_a_failing_outbox(dev_worker, tmp_path)
    dev_worker.process.send_signal(signal.SIGINT)
    await dev_worker.wait_for("shutting down")
    assert await dev_worker.exit_code(30) == 0
    assert "the worker did not stop within 10 s" in dev_worker.log
    assert "second signal" not in dev_worker.log  # one Ctrl-C is one, also with the codec server
    assert dev_server_stopped(dev_worker)


async def test_a_second_signal_stops_the_worker_at_once(
    dev_worker: RunningWorker, tmp_path: Path
) -> None:
    await register_with_a_failing_outbox(dev_worker, tmp_path)
    dev_worker.process.send_signal(signal.SIGTERM)
    await dev_worker.wait_for("shutting down")
    dev_worker.process.send_signal(signal.SIGINT)
    assert await dev_worker.exit_code(5) == 0
    assert "second signal: stopping without waiting" in dev_worker.log
    assert dev_server_stopped(dev_worker)


async def test_a_worker_without_trouble_stops_at_the_first_signal(
    dev_worker: RunningWorker,
) -> None:
    await dev_worker.wait_for("ready;")
    dev_worker.process.send_signal(signal.SIGINT)
    assert await dev_worker.exit_code(10) == 0
    assert "stopping without waiting" not in dev_worker.log
    assert dev_server_stopped(dev_worker)


async def test_the_dev_server_keeps_closed_registrations_for_the_retention(
    dev_worker: RunningWorker,
) -> None:
    """REGISTRATION_DEV_RETENTION (default 7 days) is the namespace's retention: closed histories
    are deleted after it, so the server's file does not grow without bound."""
    await dev_worker.wait_for("ready;")
    client = await Client.connect(f"127.0.0.1:{dev_worker.ports['dev_server_port']}")
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace)
    )
    assert described.config.workflow_execution_retention_ttl.ToTimedelta() == timedelta(days=7)
    assert "(closed registrations kept 7d)" in dev_worker.log
