"""No password, activation code or code-recoverable value in history, queries or logs.

Runs with payload encryption off: what is checked is what the workflow itself writes, not what a
codec hides. A leak here would be readable by anyone with access to the Temporal cluster.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.helpers import PASSWORD, wrong_code
from tests.histories.record import HERE as HISTORIES
from tests.outbox import messages_to
from tests.scenarios import EMAIL, SCENARIOS
from tests.stack import make_settings, on_queue_of, plain_client, running_stack


def readable(history_json: str) -> str:
    """The history with every payload's base64 ``data`` decoded, as a reader would see it."""
    decoded = [history_json]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    decoded.append(base64.b64decode(value).decode(errors="replace"))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(history_json))
    return "\n".join(decoded)


def codes_mailed(outbox: Path) -> set[str]:
    codes = set()
    for message in messages_to(outbox, EMAIL):
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        codes.update(re.findall(r"^([0-9]{6})$", body.get_content(), flags=re.MULTILINE))
    return codes


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_history_query_and_logs_hold_no_secret(
    name: str,
    dev_env: WorkflowEnvironment,
    time_env: WorkflowEnvironment,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every terminal path, live: the password, every code mailed and the wrong codes typed
    appear in no history, no status answer and no log line."""
    scenario = SCENARIOS[name]
    env = time_env if scenario.time_skipping else dev_env
    caplog.set_level(logging.DEBUG)
    client = await plain_client(env.client)
    settings = make_settings(tmp_path, encryption=False)
    async for stack in running_stack(client, settings, remote=scenario.remote):
        workflow_id = await scenario.run(stack, env)
        async for reader in on_queue_of(stack, workflow_id):
            status = await reader.registrations.status(EMAIL)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        codes = codes_mailed(settings.outbox_path)

    text = readable(history.to_json())
    assert "Riley" in text  # the check reads real, unencrypted payloads
    assert bool(codes) == scenario.mails_code, "the check covers the codes a scenario mails"
    wrong = {wrong_code(code, offset) for code in codes for offset in (1, 7)}  # as the scenarios
    for secret in (PASSWORD, *codes, *wrong):
        assert secret not in text, "a secret is in the workflow history"
        assert secret not in status.model_dump_json(), "a secret is in the status query"
        assert secret not in caplog.text, "a secret is in the logs"


@pytest.mark.parametrize(
    "path", sorted(HISTORIES.rglob("*.json")), ids=lambda p: str(p.relative_to(HISTORIES))
)
def test_recorded_histories_hold_no_password(path: Path) -> None:
    text = readable(path.read_text())
    assert "sealed_password" in text  # the field is there, sealed
    assert PASSWORD not in text
