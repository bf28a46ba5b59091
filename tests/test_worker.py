"""The worker's start-up failures: one line naming what to fix, an exit code, no traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


async def start_worker(data_dir: Path, *args: str, **variables: str) -> tuple[int, str]:
    """``python worker.py`` as an operator starts it; its exit code and log."""
    environment = {
        **os.environ,
        "REGISTRATION_DATA_DIR": str(data_dir),
        "REGISTRATION_METRICS_BIND_ADDRESS": "",
        **variables,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", *args, cwd=REPO, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize("taken", ["dev_server_port", "dev_ui_port", "codec_server_port"])
async def test_a_taken_port_is_named_by_its_variable(
    tmp_path: Path, taken_port: int, taken: str
) -> None:
    ports = {
        field: str(free_port()) for field in ("dev_server_port", "dev_ui_port", "codec_server_port")
    }
    ports[taken] = str(taken_port)
    code, log = await start_worker(
        tmp_path,
        "--dev",
        **{f"REGISTRATION_{field.upper()}": port for field, port in ports.items()},
    )
    assert code == 2
    assert f"REGISTRATION_{taken.upper()}: cannot listen: Address already in use" in log
    assert str(taken_port) in log
    assert "Traceback" not in log and "ready;" not in log


async def test_an_unreachable_server_is_named_and_dev_keys_are_made(tmp_path: Path) -> None:
    """The worker alone generates dev keys, on its first start, so ``make run`` works from a fresh
    clone: even a start that then fails leaves them for the next."""
    code, log = await start_worker(tmp_path, TEMPORAL_ADDRESS="127.0.0.1:9")
    assert code == 3
    assert "cannot reach the Temporal server at 127.0.0.1:9 (TEMPORAL_ADDRESS)" in log
    assert "Traceback" not in log
    assert sorted(path.name for path in (tmp_path / "keys").iterdir()) == [
        "code.key",
        "payload.key",
        "seal.key",
    ]
