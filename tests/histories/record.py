"""Records ``tests/histories/*.json``: ``python -m tests.histories.record [NAME ...]``.

It records the scenarios that have no file yet (a new terminal path) and leaves the others
alone: the committed files are what proves that the workflow still replays the histories of
running registrations, and overwriting them would prove nothing (``docs/changing-the-workflow.md``).

Each scenario of ``tests/scenarios.py`` runs against real servers (the dev server, or the
time-skipping server for timers) with the local provider and payload encryption off, so the files
are readable JSON and prove that the workflow itself writes no secret into history.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from common.converter import data_converter
from common.temporal import dev_server_path, exit_at_once
from tests.scenarios import SCENARIOS
from tests.stack import make_settings, plain_client, running_stack, start_time_skipping
from workflows import visibility

HERE = Path(__file__).parent


async def record(names: list[str]) -> None:
    plain = data_converter(None)
    async with (
        await WorkflowEnvironment.start_local(
            dev_server_existing_path=dev_server_path(),
            data_converter=plain,
            search_attributes=visibility.ALL,
        ) as dev_env,
        await start_time_skipping(plain) as time_env,
    ):
        for name in names:
            scenario = SCENARIOS[name]
            env = time_env if scenario.time_skipping else dev_env
            client = await plain_client(env.client)
            with tempfile.TemporaryDirectory() as folder:
                settings = make_settings(Path(folder), encryption=False)
                async for stack in running_stack(client, settings, remote=scenario.remote):
                    workflow_id = await scenario.run(stack, env)
                    history = await scenario.history(client, workflow_id)
            (HERE / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}: {len(history.events)} events")


def missing() -> list[str]:
    return [name for name in SCENARIOS if not (HERE / f"{name}.json").exists()]


if __name__ == "__main__":
    names = missing()
    if names:
        asyncio.run(record(names))
    else:
        print("every scenario has a recorded history (they are never re-recorded)")
    exit_at_once(0)
