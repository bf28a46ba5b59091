"""``python -m starter`` and ``python -m activities.import_customers`` under fuzzing, run in-process
through their ``main(argv)``: whatever the arguments, stdin or file, the exit code is a documented
one, stdout is exactly one JSON object, stderr holds no traceback, and an import with an invalid
row imports nothing."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from temporalio.testing import WorkflowEnvironment

from activities import import_customers as tool
from activities.providers import open_providers
from common import command_line as exits
from starter import cli
from tests.fuzz.conftest import scaled
from tests.fuzz.strategies import any_text, characters, emails, junk, texts
from tests.helpers import PASSWORD
from tests.stack import SESSION_KEYS, Stack
from tests.test_bad_input import NO_SERVER, server_of

STARTER_EXITS = {exits.OK, exits.REJECTED, exits.USAGE, exits.UNREACHABLE, cli.BUSY}
IMPORT_EXITS = {exits.OK, exits.REJECTED, exits.USAGE}
COMMANDS = ["register", "activate", "approve", "resend", "status", "cancel"]
FLAGS = [
    "--email", "--name", "--phone", "--locale", "--password-stdin", "--ttl", "--code",
    "--request-id", "--operator", "--reason", "--help", "-h", "--",
]  # fmt: skip

_lock = threading.Lock()
"""``sys.stdout``, ``sys.stderr`` and ``sys.stdin`` are the process's: one run at a time."""


def run_main(
    main: Callable[[Sequence[str]], int], argv: list[str], stdin: bytes = b""
) -> tuple[int, str, str]:
    """``main(argv)`` with ``stdin`` (bytes as a pipe gives them: decoded by the locale's UTF-8,
    strictly), its exit code (``SystemExit`` included), stdout and stderr. Any other exception
    escapes: it would have been a traceback."""
    out, err = io.StringIO(), io.StringIO()
    stdin_text = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    with (
        _lock,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        _stdin(stdin_text),
    ):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse: usage errors and --help
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _stdin(stream: io.TextIOWrapper) -> Iterator[None]:
    saved, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = saved


def one_json_object(stdout: str) -> dict[str, Any]:
    answer = json.loads(stdout)  # exactly one JSON value, nothing before or after it
    assert isinstance(answer, dict), stdout
    return answer


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


_values = any_text | st.sampled_from(
    ["kim@example.com", "Kim", "123456", "24h", "0s", "P31D", "99999999999d", "-1", "sv-SE"]
)
argvs = st.one_of(
    st.lists(st.sampled_from(COMMANDS) | st.sampled_from(FLAGS) | _values, max_size=8),
    st.tuples(
        st.sampled_from(COMMANDS),
        st.lists(st.tuples(st.sampled_from(FLAGS), _values), max_size=5),
    ).map(lambda pair: [pair[0], *[part for flag in pair[1] for part in flag]]),
)
REQUIRED = {
    "register": ["--email", "--name", "--password-stdin"],
    "activate": ["--email", "--code"],
    "approve": ["--email", "--operator", "--reason"],
    "resend": ["--email"],
    "status": ["--email"],
    "cancel": ["--email"],
}


def _command(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(COMMANDS))
    argv = [command]
    for flag in REQUIRED[command]:
        argv += [flag] if flag == "--password-stdin" else [flag, draw(_values)]
    extra = st.lists(st.sampled_from(FLAGS[2:10]) | _values, min_size=1, max_size=2)
    return argv + draw(st.just([]) | st.just([]) | extra)


_commands = st.composite(_command)()
argvs = st.integers(0, 3).flatmap(lambda pick: argvs if pick == 0 else _commands)
"""Argument lists: any words, or a command with flags and fuzzed values, or a command with its
required flags (values fuzzed) that reaches the client. Arguments reach a
process as ``os.fsdecode`` makes them: text, lone surrogates (``surrogateescape``) included."""
stdins = st.binary(max_size=64) | texts.map(
    lambda text: text.encode("utf-8", errors="surrogatepass")
)
"""Bytes on stdin (the ``--password-stdin`` password): broken UTF-8, encoded surrogates."""


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A process started in an empty folder (no ``.env``), no password prompt (``getpass``
    reads the terminal: stdin stands in for it), and logs of the Temporal client quiet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGISTRATION_DATA_DIR", str(tmp_path))
    for key, value in SESSION_KEYS.items():  # the keys a worker would have generated
        monkeypatch.setenv(f"REGISTRATION_{key.upper()}", value.get_secret_value())
    monkeypatch.setattr("getpass.getpass", _prompt)
    return monkeypatch


def _prompt(prompt: str = "") -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


@settings(max_examples=scaled(60))
@given(argv=argvs, stdin=stdins)
@example(argv=["status", "--email", "\udcff@example.com"], stdin=b"")
@example(argv=["register", "--email", "k@example.com", "--name", "K", "--password-stdin"],
         stdin=b"\xff\xfe correct horse\n")  # fmt: skip
def test_the_starter_answers_in_json_without_a_server(
    environment: pytest.MonkeyPatch, argv: list[str], stdin: bytes
) -> None:
    """Nothing listens at the server's address: usage errors, invalid input and the outage all
    answer in JSON."""
    environment.setenv("TEMPORAL_ADDRESS", NO_SERVER)
    code, stdout, stderr = run_main(cli.main, argv, stdin)
    no_traceback(stderr)
    if code == exits.OK and any(flag in argv for flag in ("-h", "--help")):
        return  # help is text for a person, not an answer
    assert code in STARTER_EXITS, (code, stdout, stderr)
    answer = one_json_object(stdout)
    event(f"exit {code}: {answer.get('error')} {answer.get('field', '')}")
    assert code == exits.OK or "error" in answer, answer


registers = st.fixed_dictionaries(
    {
        "email": st.sampled_from(["fuzz.cli@example.com", "Fuzz.CLI@Example.com"]) | emails,
        "name": st.just("Fuzz Tester") | any_text,
        "password": st.just(PASSWORD.encode()) | stdins,
    },
    optional={"phone": any_text, "locale": any_text, "ttl": any_text | st.just("15m")},
)


@settings(max_examples=scaled(25))
@given(registers)
@example({"email": "fuzz.cli@example.com", "name": "Fuzz\u202eTester", "password": b"x" * 9})
async def test_the_starter_starts_nothing_for_invalid_input(
    dev_env: WorkflowEnvironment, stack: Stack, environment: pytest.MonkeyPatch, fields: Any
) -> None:
    """``register`` against the dev server: exit 0 with a receipt, or 1 (or 2) naming why, and
    then no run for the email; any other command on its email answers too."""
    settings_ = stack.settings
    for name, value in {
        "TEMPORAL_ADDRESS": server_of(dev_env),
        "REGISTRATION_TASK_QUEUE": settings_.task_queue,
        "REGISTRATION_DATA_DIR": str(settings_.data_dir),
        **{
            f"REGISTRATION_{key.upper()}": getattr(settings_, key).get_secret_value()
            for key in ("seal_key", "code_key", "id_key", "encryption_keys")
        },
    }.items():
        environment.setenv(name, value)
    argv = ["register", "--password-stdin"]
    for flag in ("email", "name", "phone", "locale", "ttl"):
        if flag in fields:
            argv += [f"--{flag}", fields[flag]]
    workflow_id = stack.registrations.registration_id(fields["email"])
    before = await _run_id(stack, workflow_id)
    # In a thread: the worker answering it runs in this event loop, ``main`` runs its own.
    code, stdout, stderr = await asyncio.to_thread(run_main, cli.main, argv, fields["password"])
    event(f"exit {code}")
    no_traceback(stderr)
    assert code in STARTER_EXITS - {exits.UNREACHABLE}, (code, stdout, stderr)
    answer = one_json_object(stdout)
    if code != exits.OK:
        assert answer["error"] in ("invalid_input", "usage"), answer
        assert await _run_id(stack, workflow_id) == before, f"started for {fields['email']!r}"
    else:
        with contextlib.suppress(Exception):
            await stack.client.get_workflow_handle(workflow_id).terminate("fuzz example done")


async def _run_id(stack: Stack, workflow_id: str) -> str | None:
    from temporalio.service import RPCError

    if len(workflow_id.encode(errors="replace")) > 1000:
        return None  # no workflow can have it
    try:
        return (await stack.client.get_workflow_handle(workflow_id).describe()).run_id
    except (RPCError, UnicodeEncodeError):
        return None


# -- the customer import ----------------------------------------------------------------------

_row_values = {
    "email": st.sampled_from(["pia@example.com", "Pia@Example.com", "q@b\u00fccher.de"]) | emails,
    "name": st.just("Pia") | any_text,
    "phone": st.just("+46 70 123 45 67") | any_text,
}
rows = st.one_of(
    st.fixed_dictionaries(
        {"email": _row_values["email"], "name": _row_values["name"]},
        optional={"phone": _row_values["phone"] | st.none(), "Phone": junk},
    ).map(lambda row: json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.dictionaries(texts, junk, max_size=3).map(lambda row: json.dumps(row).encode()),
    st.binary(max_size=40),
    st.text(characters, max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass")),
)
files = st.tuples(
    st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe"]),
    st.lists(rows, max_size=5),
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\x85", "\u2028".encode()]),
).map(lambda parts: parts[0] + parts[2].join(parts[1]))
"""Import files: a byte-order mark (or a UTF-16 one), JSON rows valid and not, junk JSON, bytes,
broken UTF-8, any line ends."""


@pytest.fixture
def directory(environment: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The local directory a worker leaves (the import adds to an existing one)."""
    from common.settings import load_settings

    settings_ = load_settings()

    async def opened() -> None:
        async with open_providers(settings_):
            pass

    asyncio.run(opened())
    return settings_.database_path


def customers(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        (count,) = connection.execute("SELECT count(*) FROM customers").fetchone()
    return int(count)


@settings(max_examples=scaled(100))
@given(files)
@example(b'{"email": "pia@example.com", "name": "Pia"}\n{"email": "pia@example.com"}')
@example(b'{"email": "pia@example.com", "name": "Pia"}\n\x85{"email": "r@example.com"}')
def test_an_import_answers_in_json_and_imports_nothing_from_a_bad_file(
    directory: Path, tmp_path: Path, content: bytes
) -> None:
    file = tmp_path / "customers.jsonl"
    file.write_bytes(content)
    before = customers(directory)
    code, stdout, stderr = run_main(tool.main, [str(file)])
    event(f"exit {code}")
    no_traceback(stderr)
    assert code in IMPORT_EXITS, (code, stdout, stderr)
    answer = one_json_object(stdout)
    if code == exits.OK:  # every row was valid: each is imported or already present
        lines = content.decode("utf-8-sig").splitlines()
        rows = [line for line in lines if line.strip()]
        assert len(answer["imported"]) + len(answer["already_present"]) == len(rows), answer
        assert customers(directory) == before + len(answer["imported"])
    else:
        assert answer["error"] in ("invalid_row", "unreadable_file"), answer
        assert customers(directory) == before, "an invalid file imported customers"
