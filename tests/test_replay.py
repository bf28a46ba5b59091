"""Every recorded history replays against the current workflow code: a change that alters the
commands of a running registration fails here. The files are those of version 1.0, one per
terminal path (``tests/scenarios.py``); they are never re-recorded, so a change must keep them
replaying (``workflow.patched`` or worker versioning: ``docs/changing-the-workflow.md``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from common.converter import data_converter
from tests.histories import record
from tests.scenarios import SCENARIOS
from tests.stack import make_settings
from worker import workflow_runner
from workflows.models import RegistrationInput, RegistrationResult
from workflows.registration import RegistrationWorkflow
from workflows.sweep import SweepWorkflow

HISTORIES = Path(__file__).parent / "histories"


def test_recording_without_names_leaves_the_committed_histories_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make histories`` after a workflow change must not overwrite what proves that the change
    still replays running registrations: it records only scenarios without a file."""
    (tmp_path / "active_by_code.json").write_text("{}")
    monkeypatch.setattr(record, "HERE", tmp_path)
    assert record.missing() == [name for name in SCENARIOS if name != "active_by_code"]


def test_every_scenario_has_a_recorded_history() -> None:
    recorded = {path.stem for path in HISTORIES.glob("*.json")}
    assert recorded == set(SCENARIOS), "run: python -m tests.histories.record"


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox", "no-sandbox"])
@pytest.mark.parametrize(
    "path", [pytest.param(path, id=path.name) for path in sorted(HISTORIES.glob("*.json"))]
)
async def test_recorded_history_replays(path: Path, sandbox: bool, tmp_path: Path) -> None:
    """With the sandbox (the default) and without it (``REGISTRATION_WORKFLOW_SANDBOX=false``):
    the worker's own choice of runner, so either way of running it replays 1.0."""
    history = WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())
    replayer = Replayer(
        workflows=[RegistrationWorkflow, SweepWorkflow],
        data_converter=data_converter(None),
        workflow_runner=workflow_runner(make_settings(tmp_path, workflow_sandbox=sandbox)),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


@workflow.defn(name="RegistrationWorkflow", sandboxed=False)
class ChangedWorkflow(RegistrationWorkflow):
    """The workflow with one command more (a timer before the welcome mail), as an unversioned
    change would add it."""

    @workflow.run
    async def run(self, input: RegistrationInput) -> RegistrationResult:
        return await super().run(input)

    async def _send_welcome(self) -> None:
        await workflow.sleep(timedelta(seconds=1))
        await super()._send_welcome()


async def test_an_unversioned_change_fails_the_replay() -> None:
    """The replay above is what catches a change that alters a running registration's commands:
    without ``workflow.patched`` (or worker versioning), the 1.0 history no longer replays."""
    history = WorkflowHistory.from_json("changed", (HISTORIES / "active_by_code.json").read_text())
    replayer = Replayer(workflows=[ChangedWorkflow], data_converter=data_converter(None))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
    assert (
        "Nondeterminism" in type(result.replay_failure).__name__
        or "nondetermin" in str(result.replay_failure).lower()
    )
