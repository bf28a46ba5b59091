"""``python -m bench.replay``: worker CPU of the registration's workflow code over the baseline's.

The benchmark's one profiling aid, kept because its figure is the one the benchmark cannot give
quickly or steadily: the worker's CPU per unit mixes the workflow's own cost (the sandbox,
activations, payloads through the converter) with the activities, thread hand-offs and the
kernel, and on 2 shared cores it moves by 10 to 15% per invocation. Replaying a recorded history
runs only the workflow's part, in one process, with no server or activities: this records one
happy-path unit of each (registration and baseline, through the load generator on a fresh dev
server with payload encryption on, as the benchmark runs them), then replays each history
``--count`` times with the worker's runner and converter (``--sandbox``: in the sandbox),
``--rounds`` times alternating, and prints the median CPU per replay. It moves by a few percent
between invocations and takes about a minute, so it is the quick check that a workflow change
does not make every registration dearer; the absolute figure is below a live worker's, which
also polls and runs activities.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, Worker

from activities.providers import Providers, open_providers
from bench.baseline import BaselineActivities, BaselineWorkflow
from bench.load import BaselineScenario, RegistrationScenario, Scenario
from bench.mailbox import ShardedOutbox
from bench.stack import fresh_server, generated_keys, settings_values
from common.converter import data_converter
from common.settings import Settings
from worker import create_worker, workflow_runner
from workflows.registration import RegistrationWorkflow


async def record(root: Path, settings: Settings) -> dict[str, tuple[Any, WorkflowHistory]]:
    """One unit of each workflow on a fresh server; their histories by label."""
    async with (
        fresh_server(root / "server", data_converter(settings)) as (env, _),
        open_providers(settings) as opened,
    ):
        client: Client = env.client
        mail = ShardedOutbox(settings.outbox_path, settings.mail_from)
        providers = Providers(identity=opened.identity, customers=opened.customers, mail=mail)
        units: dict[str, tuple[Any, Scenario]] = {
            "registration": (
                RegistrationWorkflow,
                RegistrationScenario(client, settings, secrets.token_urlsafe(18)),
            ),
            "baseline": (BaselineWorkflow, BaselineScenario(client, "replay-baseline", root)),
        }
        baseline_worker = Worker(
            client,
            task_queue="replay-baseline",
            workflows=[BaselineWorkflow],
            activities=BaselineActivities(root).all(),
            workflow_runner=workflow_runner(settings),
        )
        async with create_worker(client, settings, providers), baseline_worker:
            for _, scenario in units.values():
                await scenario.one("replay")
                assert await scenario.finished("replay")
        return {
            label: (
                workflow,
                await client.get_workflow_handle(scenario.workflow_id("replay")).fetch_history(),
            )
            for label, (workflow, scenario) in units.items()
        }


async def replay_cpu_ms(
    workflow: Any, history: WorkflowHistory, settings: Settings, count: int
) -> float:
    """CPU milliseconds per replay of ``history``, ``count`` replays in one worker."""
    replayer = Replayer(
        workflows=[workflow],
        data_converter=data_converter(settings),
        workflow_runner=workflow_runner(settings),
    )
    copies = [WorkflowHistory(f"{history.workflow_id}-{i}", history.events) for i in range(count)]

    async def histories() -> Any:
        for copy in copies:
            yield copy

    began = time.process_time()
    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            if result.replay_failure is not None:
                raise result.replay_failure
    return (time.process_time() - began) / count * 1000


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="registration-replay-") as temp:
        root = Path(temp)
        values = settings_values(root, "replay", generated_keys())
        settings = Settings(_env_file=None, **values, workflow_sandbox=args.sandbox)
        recorded = await record(root, settings)
        for workflow, history in recorded.values():  # warm-up: imports, sandbox set-up
            await replay_cpu_ms(workflow, history, settings, 20)
        figures: dict[str, list[float]] = {label: [] for label in recorded}
        for _ in range(args.rounds):
            for label, (workflow, history) in recorded.items():
                figures[label].append(await replay_cpu_ms(workflow, history, settings, args.count))
    print(
        f"replays: {args.count} per round, {args.rounds} rounds alternating,"
        f" sandbox {'on' if args.sandbox else 'off'}; CPU ms per replay"
    )
    for label, (_, history) in recorded.items():
        ms = figures[label]
        print(
            f"  {label:13} median {statistics.median(ms):6.2f}"
            f"  (min {min(ms):.2f}, max {max(ms):.2f}), {len(history.events)} events"
        )
    difference = statistics.median(figures["registration"]) - statistics.median(figures["baseline"])
    print(f"  registration - baseline: {difference:+.2f} ms per workflow")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="replays per round and workflow")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument(
        "--sandbox", action="store_true", help="replay in the SDK's sandbox (the tests' runner)"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
