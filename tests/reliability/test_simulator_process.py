"""The reliability suite's simulator process (``harness.SimulatorProcess``): a simulator's
standalone mode started as a process of its own, configured by its command line."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.reliability.harness import SimulatorProcess
from tests.simulators.hantera import main


async def test_standalone_process(tmp_path: Path) -> None:
    """``python -m tests.simulators.hantera`` as a process of its own (as the reliability suite
    runs it): the switches from ``--faults``, the variables it printed; wrong switches refused."""
    faults = {"error_rate": 0.25, "lost_answer_rate": 0.5, "seed": 3}
    args = ["--seed", "7", "--client-secret", "s3cret", "--faults", json.dumps(faults)]
    process = SimulatorProcess(tmp_path, "tests.simulators.hantera", args)
    await process.start()
    try:
        assert process.env == {
            "REGISTRATION_HANTERA_BASE_URL": process.base_url,
            "REGISTRATION_HANTERA_CLIENT_ID": "registration-service",
            "REGISTRATION_HANTERA_CLIENT_SECRET": "s3cret",
        }
        async with httpx.AsyncClient(base_url=process.base_url) as http:
            switches = (await http.get("/_sim/faults")).json()
        assert {name: switches[name] for name in faults} == faults
        assert process.cpu_seconds() > 0
    finally:
        await process.stop()
    for wrong in ('{"nonsense": 1}', "[1]", "{"):
        with pytest.raises(SystemExit):
            main(["--faults", wrong])
