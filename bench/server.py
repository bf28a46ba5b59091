"""A fresh embedded Temporal dev server for one measured run (``python -m bench`` and its
diagnostic scripts ``bench.timeline``, ``bench.shapes`` and ``bench.replay``), and up-to-date
bytecode for the workers it serves."""

from __future__ import annotations

import asyncio
import compileall
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from bench.procstat import child_pids
from common.temporal import dev_server_path, dev_server_sqlite_args
from workflows import visibility


@asynccontextmanager
async def fresh_server(
    folder: Path, converter: DataConverter
) -> AsyncIterator[tuple[WorkflowEnvironment, int]]:
    """A dev server of its own for one run, started as ``make run`` starts it (SQLite file in WAL
    mode, search attributes registered), and its pid. One per run because a server that has
    already run another batch is slower (measured: ~3 ms more server CPU per registration after
    the baseline's 620 workflows), which would bias the comparison by the order of the runs."""
    await asyncio.to_thread(compile_sources)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    with stdout_to_stderr():  # its banner would end up in the report (or the JSON)
        env = await WorkflowEnvironment.start_local(
            data_converter=converter,
            dev_server_existing_path=dev_server_path(),
            dev_server_database_filename=str(folder / "temporal.sqlite3"),
            dev_server_extra_args=dev_server_sqlite_args(),
            search_attributes=visibility.ALL,
        )
    async with env:
        servers = child_pids("temporal")
        if len(servers) != 1:
            raise RuntimeError(f"expected one 'temporal' child process, found {servers}")
        yield env, servers[0]


SOURCES = ("workflows", "activities", "common", "bench")
"""What ``make compile`` compiles: the workflow sandbox re-imports these for every workflow."""


def compile_sources() -> None:
    """Bytecode for every module a worker's sandbox re-imports per workflow, written if missing
    or older than its source. Without it (a fresh clone, or a module edited since the last
    compile, with ``PYTHONDONTWRITEBYTECODE`` set as here) each workflow compiles its module
    from source: 3.6 ms of worker CPU per registration, against nothing for a baseline module
    that rarely changes, so the comparison would depend on which file was edited last."""
    root = Path(__file__).resolve().parent.parent
    for folder in SOURCES:
        if not compileall.compile_dir(root / folder, quiet=1):
            raise RuntimeError(f"cannot compile {root / folder}")


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Children started meanwhile inherit stderr as their stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
