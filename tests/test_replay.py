"""Every recorded history replays against the current workflow code: a change that breaks
determinism fails here (and needs ``workflow.patched``). Histories of earlier versions of the
workflow stay, in subfolders, and must keep replaying: ``v1/`` before search attributes, ``v2/``
before the one-step customer (``ProviderProfile.customer_in_one_step``), ``v3/`` before an
email with an account was answered like a pending registration until its window ended
(``ProviderProfile.existing_account_answers_as_pending``), ``v4/`` before linking the customer
and activating the principal became one local activity
(``ProviderProfile.activation_in_one_step``). ``v5/`` holds rare paths recorded with the workflow
of ``7700a0e`` that later behaviour puts behind ``workflow.patched``: a cancel of an
already-registered run (``keep-first-ending``), a resend while its first notice is being sent
(``first-notice-first``) and a cancel while an undo fails (``undo-through-cancel``); they fail if
a patch's old branch stops reproducing the old commands. ``v6/`` holds paths recorded with the
workflow of ``a534383`` before later behaviour: a cancel before the first step ended the run at
"starting" (``cancel-before-the-start``), a cancel while a failed run waited for a resend turned
it into a cancellation (``cancel-after-the-end-ignored``), a resend in the workflow task of an
approval mailed a code (``no-code-after-approval``), and failures whose reason named the error
type twice and whose status named the customer the undo deleted. ``v7/`` holds the paths that
``ProviderProfile.existing_account_in_equal_time`` changed: an email with an account mailed its
owner without first spending what a principal's create costs, and the first resend throttle
counted from the first mail instead of the start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from common.converter import data_converter
from tests.histories import record
from tests.scenarios import SCENARIOS
from worker import SANDBOX
from workflows.registration import RegistrationWorkflow

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


ABANDONED_RESEND = HISTORIES / "v6" / "failed_then_cancelled_while_answering.json"
"""Records the defect ``cancel-after-the-end-ignored`` fixed: the cancel ended the run while a
resend was still being answered, so its faithful replay warns that an update handler was left
unfinished (``UnfinishedUpdateHandlersWarning``). Expected there, and only there."""


def _replay_case(path: Path) -> Any:
    marks = (
        [pytest.mark.filterwarnings("ignore::temporalio.workflow.UnfinishedUpdateHandlersWarning")]
        if path == ABANDONED_RESEND
        else []
    )
    return pytest.param(path, marks=marks, id=str(path.relative_to(HISTORIES)))


@pytest.mark.parametrize("path", [_replay_case(path) for path in sorted(HISTORIES.rglob("*.json"))])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())
    replayer = Replayer(
        workflows=[RegistrationWorkflow],
        data_converter=data_converter(None),
        workflow_runner=SANDBOX,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
