"""Property-based fuzzing of the whole HTTP API from its OpenAPI document with Schemathesis, over
real HTTP against the API in front of a worker on the dev server: no answer is a 5xx, and every
answer conforms to the document (status, content type, headers, body schema). Schemathesis runs
as its CLI in a subprocess, so that this test's event loop keeps serving the API meanwhile."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from tests.api_stack import STAFF_TOKEN, running_api
from tests.stack import Stack

EXAMPLES = 30
"""Per operation and phase: enough to reach every field's errors, within about a minute."""
CHECKS_LEFT_OUT = "positive_data_acceptance"
"""Valid by the schema is not valid by the rules: a schema-valid email or password may still be
refused by the client's checks (400 naming the field), as documented."""


async def test_the_api_survives_fuzzing_and_answers_as_documented(
    stack: Stack, tmp_path: Path
) -> None:
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert executable, "schemathesis is a test dependency (pyproject.toml)"
    async with running_api(stack) as api:
        process = await asyncio.create_subprocess_exec(
            executable, "run", f"{api.url}/openapi.json",
            "--checks", "all", "--exclude-checks", CHECKS_LEFT_OUT,
            "--max-examples", str(EXAMPLES), "--seed", "21",
            "--generation-database", "none",
            "--header", f"Authorization: Bearer {STAFF_TOKEN}",
            "--request-timeout", "60", "--no-color",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        output, _ = await process.communicate()
    report = output.decode(errors="replace")
    print(report[-3000:])  # the summary, shown with -s
    assert process.returncode == 0, report[-20000:]
    assert " generated, " in report, report[-5000:]
