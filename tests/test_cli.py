"""The CLI answers every failure in JSON on stdout with its exit code, without a traceback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import ProviderUnavailable
from common.settings import Settings
from starter import cli


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings of a process started in an empty folder (no ``.env``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGISTRATION_DATA_DIR", str(tmp_path))


def answer(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    printed: dict[str, Any] = json.loads(capsys.readouterr().out)
    return printed


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["activate", "--email", "kim@example.com"], "--code"),
        (["unknown-command"], "invalid choice"),
        (["register", "--email", "kim@example.com", "--name", "Kim", "--ttl", "soon"], "--ttl"),
        (["register", "--email", "k@example.com", "--name", "K", "--ttl", "99999999999d"], "range"),
    ],
)
def test_usage_errors_answer_in_json(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == cli.USAGE
    printed = answer(capsys)
    assert printed["error"] == "usage" and words in printed["message"]


async def refused(args: argparse.Namespace, settings: Settings) -> tuple[int, Any]:
    raise RPCError("namespace is throttled", RPCStatusCode.RESOURCE_EXHAUSTED, b"")


def test_other_temporal_errors_answer_in_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "run", refused)
    assert cli.main(["status", "--email", "kim@example.com"]) == cli.REJECTED
    assert answer(capsys) == {"error": "temporal", "message": "namespace is throttled"}


async def unavailable(args: argparse.Namespace, settings: Settings) -> tuple[int, Any]:
    raise RPCError("connection reset", RPCStatusCode.UNAVAILABLE, b"")


async def provider_down(args: argparse.Namespace, settings: Settings) -> tuple[int, Any]:
    raise ProviderUnavailable("Hantera POST /resources/actors/asset/new: HTTP 503")


def test_a_server_lost_mid_call_is_unreachable_and_a_provider_error_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "run", unavailable)
    assert cli.main(["status", "--email", "kim@example.com"]) == cli.UNREACHABLE
    unreachable = answer(capsys)
    assert unreachable["error"] == "server_unreachable" and unreachable["address"]
    monkeypatch.setattr(cli, "run", provider_down)  # e.g. during customers import
    assert cli.main(["status", "--email", "kim@example.com"]) == cli.REJECTED
    assert answer(capsys) == {
        "error": "provider",
        "type": "ProviderUnavailable",
        "message": "Hantera POST /resources/actors/asset/new: HTTP 503",
    }


async def update_timed_out(args: argparse.Namespace, settings: Settings) -> tuple[int, Any]:
    raise WorkflowUpdateRPCTimeoutOrCancelledError()


def test_any_other_temporal_error_answers_in_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "run", update_timed_out)
    assert cli.main(["activate", "--email", "kim@example.com", "--code", "123456"]) == cli.REJECTED
    assert answer(capsys)["error"] == "temporal"
