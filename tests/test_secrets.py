"""No password, activation code, link token or code-recoverable value in history, queries or logs.

Runs with payload encryption off: what is checked is what the workflow itself writes, not what a
codec hides. A leak here would be readable by anyone with access to the Temporal cluster. A
secret that appears only transformed (encoded, or appended to its digest) is not found by looking
for it: so every digest in a history must also be exactly the keyed HMAC of a secret that was
mailed, which nobody without the code key can reverse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from common.keys import hmac_keys
from tests.helpers import PASSWORD, wrong_code
from tests.histories.record import HERE as HISTORIES
from tests.outbox import CODE_LINE, LINK_TOKEN, messages_to
from tests.scenarios import EMAIL, SCENARIOS
from tests.stack import make_settings, on_queue_of, plain_client, running_stack


def payload_texts(history_json: str) -> list[str]:
    """Every payload's base64 ``data`` decoded, as a reader of the history would see it."""
    decoded = []

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
    return decoded


def readable(history_json: str) -> str:
    """The history with its payloads decoded."""
    return "\n".join([history_json, *payload_texts(history_json)])


def issued_activations(history_json: str) -> list[dict[str, Any]]:
    """Every ``IssuedActivation`` in the history's payloads (the result of ``issue_activation``,
    as an activity result or a local activity's marker), as recorded."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "code_digest" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for text in payload_texts(history_json):
        try:
            walk(json.loads(text))
        except json.JSONDecodeError:
            continue  # not JSON: holds no IssuedActivation
    return found


def mailed(outbox: Path) -> tuple[set[str], set[str]]:
    """The codes (a line of 6 digits) and link tokens in the text of every mail to ``EMAIL``."""
    codes: set[str] = set()
    tokens: set[str] = set()
    for message in messages_to(outbox, EMAIL):
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        text = body.get_content()
        codes.update(line for line in text.splitlines() if CODE_LINE.fullmatch(line))
        tokens.update(LINK_TOKEN.findall(text))
    return codes, tokens


def keyed_hmac(key: bytes, registration_id: str, sequence: int, secret: str) -> str:
    """The digest ``activities/codes.py`` must make: HMAC-SHA256 of the registration, the code's
    sequence and the secret. Written out here rather than called, so that a digest that also
    carries the secret (a reversible "hash") cannot pass for it."""
    message = f"{registration_id}\x00{sequence}\x00{secret}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def holds(text: str, secret: str) -> bool:
    """Whether ``secret`` is in ``text``; a 6-digit code only as a number of its own, not as six
    digits of a longer one (a timestamp's nanoseconds, an event or task id), which would fail
    the test about once in a few hundred runs without any leak."""
    if not secret.isdigit():
        return secret in text
    return re.search(rf"(?<!\d){secret}(?!\d)", text) is not None


@pytest.mark.parametrize("name", sorted(n for n, s in SCENARIOS.items() if not s.sweep))
async def test_history_query_and_logs_hold_no_secret(
    name: str,
    dev_env: WorkflowEnvironment,
    time_env: WorkflowEnvironment,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every terminal path, live: the password, every code and link token mailed and the wrong
    codes typed appear in no history, no status answer and no log line; every digest in the
    history is the keyed HMAC of a code (or token) mailed for that registration and sequence."""
    scenario = SCENARIOS[name]
    env = time_env if scenario.time_skipping else dev_env
    caplog.set_level(logging.DEBUG)
    client = await plain_client(env.client)
    settings = make_settings(tmp_path, encryption=False)
    async for stack in running_stack(client, settings, remote=scenario.remote):
        workflow_id = await scenario.run(stack, env)
        async for reader in on_queue_of(stack, workflow_id):
            status = await reader.registrations.status(EMAIL)
        history = await scenario.history(client, workflow_id)
        codes, tokens = mailed(settings.outbox_path)

    history_json = history.to_json()
    text = readable(history_json)
    assert "Riley" in text  # the check reads real, unencrypted payloads
    assert bool(codes) == scenario.mails_code, "the check covers the codes a scenario mails"
    wrong = {wrong_code(code, offset) for code in codes for offset in (1, 7)}  # as the scenarios
    for secret in (PASSWORD, *codes, *tokens, *wrong):
        assert not holds(text, secret), "a secret is in the workflow history"
        assert not holds(status.model_dump_json(), secret), "a secret is in the status query"
        assert not holds(caplog.text, secret), "a secret is in the logs"

    (key,) = hmac_keys(settings.code_key, settings.data_dir, "code")
    issued = issued_activations(history_json)
    assert issued or "issue_activation" not in text, "the check reads every code's digests"
    for activation in issued:
        sequence = activation["sequence"]
        made = {keyed_hmac(key, workflow_id, sequence, code) for code in codes}
        assert activation["code_digest"] in made, "a code digest is not the HMAC of a code mailed"
        token_digest = activation["token_digest"]
        made = {keyed_hmac(key, workflow_id, sequence, token) for token in tokens}
        assert token_digest is None or token_digest in made, "a token digest is not an HMAC"
    assert bool(tokens) == any(a["token_digest"] for a in issued), "the check covers link tokens"


@pytest.mark.parametrize(
    "path", sorted(HISTORIES.rglob("*.json")), ids=lambda p: str(p.relative_to(HISTORIES))
)
def test_recorded_histories_hold_no_password(path: Path) -> None:
    text = readable(path.read_text())
    sweep = SCENARIOS[path.stem].sweep
    assert ("sealed_password" in text) is not sweep  # a registration's field, sealed
    assert PASSWORD not in text
