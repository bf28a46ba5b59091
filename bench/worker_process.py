"""The benchmark's worker, in its own process: ``python -m bench.worker_process``.

Why a subprocess: in production the worker and the services that call ``RegistrationClient`` are
different processes. Run here in one process they would share one GIL and one event loop, and
neither the worker's peak RSS nor its CPU time could be told apart from the load generator's.

Protocol (kept to pipes so no key shows up in ``ps`` or the environment), both ends here: the
parent (``started``) writes one JSON line to stdin (``WorkerConfig``); this process connects,
starts the worker and prints ``READY``; it stops the worker gracefully when stdin closes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.worker import Worker

from activities.providers import Providers, local, open_providers
from bench.baseline import BaselineActivities, BaselineWorkflow
from bench.mailbox import ShardedOutbox
from bench.stack import REPO
from common.converter import data_converter
from common.settings import Settings
from worker import create_worker, workflow_runner
from worker import runtime as metrics_runtime

READY = b"READY\n"
START_SECONDS = 60.0
STOP_SECONDS = 30.0

P = ParamSpec("P")
T = TypeVar("T")


class WorkerConfig(BaseModel):
    baseline: bool
    """The baseline workflow (``bench/baseline.py``) instead of the registration."""
    target_host: str
    namespace: str
    settings: dict[str, Any]
    """Keyword arguments of ``Settings``, secrets in clear (they only travel over the pipe)."""
    marker_dir: Path
    stub_argon2id: bool = False
    """Replace the local provider's Argon2id by a constant (the ``no-argon2id`` run)."""

    @classmethod
    def beside(
        cls,
        client: Client,
        settings: dict[str, Any],
        marker_dir: Path,
        *,
        baseline: bool = False,
        stub_argon2id: bool = False,
    ) -> WorkerConfig:
        """A worker for ``settings`` on ``client``'s server and namespace."""
        return cls(
            baseline=baseline,
            target_host=client.service_client.config.target_host,
            namespace=client.namespace,
            settings=settings,
            marker_dir=marker_dir,
            stub_argon2id=stub_argon2id,
        )


def stub_argon2id() -> None:
    """Make the local provider's password hash free, for the ``no-argon2id`` run: every principal
    gets one fixed PHC string (a real one's format and length). The provider looks
    ``_hash_password`` up at call time, so replacing the module attribute is enough.

    The hop to the ``argon2id`` thread pool and back (``LocalDirectory.hash``) goes too: it exists
    only because hashing is slow, and its hand-offs cost worker CPU that belongs to hashing. Any
    other function (``_verify_password``: a real Argon2id check, unused on the happy path) keeps
    the pool.
    """
    fixed = local._hash_password(secrets.token_urlsafe(18))

    def constant(password: str) -> str:
        return fixed

    on_pool = local.LocalDirectory.hash

    async def hash_inline(
        self: local.LocalDirectory, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        stubbed = fn is constant  # a name, not the test: mypy would narrow fn to `constant`
        if stubbed:
            return fn(*args, **kwargs)
        return await on_pool(self, fn, *args, **kwargs)

    local._hash_password = constant
    local.LocalDirectory.hash = hash_inline  # type: ignore[method-assign]


async def serve(config: WorkerConfig) -> None:
    """The registration worker exactly as ``worker.py`` builds it (with the sharded outbox), or
    the baseline on the same workflow runner (``workflow_runner``) and default worker options."""
    settings = Settings(_env_file=None, **config.settings)
    if config.stub_argon2id:
        stub_argon2id()
    client = await Client.connect(
        config.target_host,
        namespace=config.namespace,
        data_converter=data_converter(settings),
        runtime=metrics_runtime(settings),  # Prometheus export on, as `make run` has it
    )
    async with AsyncExitStack() as stack:
        if not config.baseline:
            opened = await stack.enter_async_context(open_providers(settings))
            providers = Providers(
                identity=opened.identity,
                customers=opened.customers,
                mail=ShardedOutbox(settings.outbox_path, settings.mail_from),
            )
            worker = create_worker(client, settings, providers)
        else:
            worker = Worker(
                client,
                task_queue=settings.task_queue,
                workflows=[BaselineWorkflow],
                activities=BaselineActivities(config.marker_dir).all(),
                workflow_runner=workflow_runner(settings),
            )
        async with worker:
            sys.stdout.buffer.write(READY)
            sys.stdout.flush()
            await asyncio.to_thread(sys.stdin.read)  # returns at EOF: the parent is done


@asynccontextmanager
async def started(config: WorkerConfig) -> AsyncIterator[int]:
    """The parent's end: a worker subprocess, its pid yielded once it is ready, stopped after."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.worker_process",
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(config.model_dump_json().encode() + b"\n")
        async with asyncio.timeout(START_SECONDS):
            if await process.stdout.readline() != READY:
                raise RuntimeError("the worker process did not start")
        yield process.pid
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="worker: %(levelname)s %(name)s: %(message)s")
    config = WorkerConfig.model_validate_json(sys.stdin.readline())
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
