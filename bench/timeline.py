"""``python -m bench.timeline``: where one activation's milliseconds go, at 1 in flight.

Starts the embedded dev server as ``make run`` does (SQLite file, WAL, search attributes) and a
registration worker in this process whose activities are timed by an activity interceptor; runs
registrations one at a time and times each ``submit_code`` from the call to the answer. It prints
the medians of three phases: until the first local activity starts (client, server, the worker's
first activation), the local activities on the update's path and the hops between them, and
from the last one's end to the answer (the worker's last activation, the server persisting the
final workflow task and answering), then one whole timeline. Worker and client share this process
and its GIL, so absolute figures run a little higher than the benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from activities.providers import Providers, open_providers
from bench.mailbox import ShardedOutbox, read_code
from bench.run_settings import generated_keys, settings_values
from bench.server import fresh_server
from common.converter import data_converter
from common.settings import Settings
from starter.client import RegistrationClient
from worker import SANDBOX, registration_activities
from workflows.registration import RegistrationWorkflow


@dataclass(frozen=True)
class Event:
    at: float
    what: str


class Recorder(Interceptor):
    """Records when each activity of this worker starts and ends (``time.perf_counter``)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Timed(next, self.events)


class _Timed(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, events: list[Event]) -> None:
        super().__init__(next)
        self._events = events

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        self._events.append(Event(time.perf_counter(), f"start {name}"))
        try:
            return await super().execute_activity(input)
        finally:
            self._events.append(Event(time.perf_counter(), f"end   {name}"))


@dataclass(frozen=True)
class Activation:
    began: float
    answered: float
    events: list[Event]

    def phases_ms(self) -> tuple[float, float, float, float]:
        first, last = self.events[0].at, self.events[-1].at
        return (
            (first - self.began) * 1000,
            (last - first) * 1000,
            (self.answered - last) * 1000,
            (self.answered - self.began) * 1000,
        )


async def activate_one(
    registrations: RegistrationClient, recorder: Recorder, outbox: Path, email: str
) -> Activation:
    await registrations.register(email=email, name="Timeline Customer", password=PASSWORD)
    code = await read_code(outbox, email)
    await asyncio.sleep(0.1)  # the workflow is waiting for the code, as when a person types it
    recorder.events.clear()
    began = time.perf_counter()
    await registrations.submit_code(email, code)
    answered = time.perf_counter()
    await asyncio.sleep(0.05)  # let the welcome mail's end be recorded if it came after
    return Activation(began, answered, [e for e in recorder.events if e.at <= answered])


PASSWORD = secrets.token_urlsafe(18)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="registration-timeline-") as temp:
        root = Path(temp)
        settings = Settings(_env_file=None, **settings_values(root, "timeline", generated_keys()))
        recorder = Recorder()
        async with (
            fresh_server(root / "server", data_converter(settings)) as (env, _),
            open_providers(settings) as opened,
        ):
            providers = Providers(
                identity=opened.identity,
                customers=opened.customers,
                mail=ShardedOutbox(settings.outbox_path, settings.mail_from),
            )
            async with Worker(
                env.client,
                task_queue=settings.task_queue,
                workflows=[RegistrationWorkflow],
                activities=registration_activities(providers, settings),
                workflow_runner=SANDBOX,
                interceptors=[recorder],
            ):
                registrations = RegistrationClient(env.client, settings)
                runs = [
                    await activate_one(
                        registrations, recorder, settings.outbox_path, f"t{i}@example.com"
                    )
                    for i in range(args.warmup + args.count)
                ][args.warmup :]
    report(runs)


def report(runs: list[Activation]) -> None:
    phases = list(zip(*(run.phases_ms() for run in runs), strict=True))
    names = ("until the first activity", "local activities", "after the last", "total")
    print(f"activation (submit_code until the answer), {len(runs)} at 1 in flight, medians:")
    for name, values in zip(names, phases, strict=True):
        print(f"  {name:26}{statistics.median(values):7.1f} ms")
    typical = sorted(runs, key=lambda run: run.phases_ms()[3])[len(runs) // 2]
    print("one activation (the median one), ms since submit_code was called:")
    for event in typical.events:
        print(f"  {(event.at - typical.began) * 1000:7.1f}  {event.what}")
    print(f"  {(typical.answered - typical.began) * 1000:7.1f}  answer received")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.timeline", description=__doc__)
    parser.add_argument("--count", type=int, default=40, help="activations timed")
    parser.add_argument("--warmup", type=int, default=5, help="activations before, not counted")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
