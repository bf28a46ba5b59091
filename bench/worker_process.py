"""The benchmark's worker, in its own process: ``python -m bench.worker_process``.

Why a subprocess: in production the worker and the services that call ``RegistrationClient`` are
different processes. Run here in one process they would share one GIL and one event loop, and
neither the worker's peak RSS nor its CPU time could be told apart from the load generator's.

Protocol (kept to pipes so no key shows up in ``ps`` or the environment): the parent writes one
JSON line to stdin (``WorkerConfig``); this process connects, starts the worker and prints
``READY``; it stops the worker gracefully when stdin closes, then exits.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.worker import Worker

from activities.providers import Providers, local, open_providers
from bench.baseline import BaselineActivities, BaselineWorkflow
from bench.mailbox import ShardedOutbox
from common.converter import data_converter
from common.settings import Settings
from worker import SANDBOX, create_worker
from worker import runtime as metrics_runtime

READY = "READY"

P = ParamSpec("P")
T = TypeVar("T")


class WorkerConfig(BaseModel):
    kind: Literal["registration", "baseline"]
    target_host: str
    namespace: str
    settings: dict[str, Any]
    """Keyword arguments of ``Settings``, secrets in clear (they only travel over the pipe)."""
    marker_dir: Path
    stub_argon2id: bool = False
    """Replace the local provider's Argon2id by a constant (the ``no-argon2id`` run)."""


def stub_argon2id() -> None:
    """Make the local provider's password hash free: every principal gets one fixed PHC string
    (same format and length as a real one), so the run measures everything but Argon2id. The
    provider looks ``_hash_password`` up at call time, so replacing the module attribute is
    enough; only this benchmark process is affected.

    The hop to the ``argon2id`` pool and back (``LocalDirectory.hash``) goes too: it exists only
    because hashing is slow, and its thread hand-offs cost the worker CPU, so keeping it would
    leave part of hashing's cost in the "excluding hashing" figures. Only the stub runs inline;
    any other function (``_verify_password``, which still runs a real Argon2id check against the
    constant hash, ~20 ms that must not block the event loop) keeps the pool. No registration
    calls it on the happy path: only ``verify_password``, which no workflow step uses.
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
    the baseline on the same workflow runner (sandbox) and default worker options."""
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
        if config.kind == "registration":
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
                workflow_runner=SANDBOX,
            )
        async with worker:
            print(READY, flush=True)
            await asyncio.to_thread(sys.stdin.read)  # returns at EOF: the parent is done


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="worker: %(levelname)s %(name)s: %(message)s")
    config = WorkerConfig.model_validate_json(sys.stdin.readline())
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
