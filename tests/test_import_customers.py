"""``python -m activities.import_customers``: customers pre-loaded for registrations to link to,
every failure answered in JSON on stdout with its exit code, nothing imported from a bad file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from activities import import_customers as tool
from activities.errors import ProviderUnavailable
from activities.providers import open_providers
from activities.providers.local import LocalCustomers
from common import command_line as exits
from common.settings import Settings
from tests.test_bad_input import NO_SERVER
from tests.test_bad_input import cli as run_cli

MODULE = "activities.import_customers"


async def run_import(
    settings: Settings, *args: str, **variables: str
) -> tuple[int, dict[str, Any]]:
    """The tool as an operator runs it (it needs no Temporal server)."""
    return await run_cli(NO_SERVER, settings, *args, module=MODULE, **variables)


async def as_a_worker_left_it(settings: Settings) -> None:
    """The local directory a worker creates at start-up: an import only adds to an existing one."""
    async with open_providers(settings):
        pass


async def test_imports_customers_and_names_a_missing_file(
    settings: Settings, tmp_path: Path
) -> None:
    await as_a_worker_left_it(settings)
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"email": "Nia@Example.com", "name": "Nia"}\n\n'
        '{"email": "oz@example.com", "name": "Oz", "phone": "+46 70 123 45 67"}\n'
    )
    code, out = await run_import(settings, str(good))
    assert code == exits.OK
    assert [row["email"] for row in out["imported"]] == ["Nia@Example.com", "oz@example.com"]
    code, out = await run_import(settings, str(good))
    assert code == exits.OK and out == {
        "imported": [],
        "already_present": ["Nia@Example.com", "oz@example.com"],
    }

    missing = tmp_path / "missing.jsonl"
    code, out = await run_import(settings, str(missing))
    assert code == exits.USAGE and out["error"] == "unreadable_file"
    assert out["file"] == str(missing) and str(missing) in out["message"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ('{"email": "not-an-email", "name": ""}', "email"),
        ('{"email": "pia@example.com", "name": "   "}', "name"),
        ('{"email": "pia@example.com", "name": "Pia\\u0000"}', "name"),
        ('{"email": "pia@example.com", "name": "Pia\\nPia"}', "name"),
        ('{"email": "pia@example.com", "name": "Pia", "phone": "call me"}', "phone"),
        ('{"name": "Pia"}', "email"),
        ("not json", None),
    ],
)
async def test_a_bad_row_is_named_and_nothing_is_imported(
    settings: Settings, tmp_path: Path, row: str, field: str | None
) -> None:
    file = tmp_path / "customers.jsonl"
    file.write_text('{"email": "quinn@example.com", "name": "Quinn"}\n' + row + "\n")
    code, out = await run_import(settings, str(file))
    assert code == exits.USAGE and out["error"] == "invalid_row"
    assert (out["file"], out["line"], out["field"]) == (str(file), 2, field)
    async with open_providers(settings) as providers:
        assert isinstance(providers.customers, LocalCustomers)
        assert await providers.customers.find_customer("quinn@example.com") is None


async def test_bad_configuration_and_usage_answer_in_json(
    settings: Settings, tmp_path: Path
) -> None:
    file = tmp_path / "customers.jsonl"
    file.write_text('{"email": "rae@example.com", "name": "Rae"}\n')
    await as_a_worker_left_it(settings)
    code, out = await run_import(settings, str(file), REGISTRATION_IDENTITY_PROVIDER="bogus")
    assert code == exits.USAGE and out["error"] == "configuration"
    assert "REGISTRATION_IDENTITY_PROVIDER='bogus'" in out["message"]

    code, out = await run_import(settings)
    assert code == exits.USAGE and out["error"] == "usage" and "file" in out["message"]


async def provider_down(settings: Settings, file: Path) -> dict[str, Any]:
    raise ProviderUnavailable("Hantera POST /resources/actors/asset/new: HTTP 503")


def test_a_provider_error_is_named(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGISTRATION_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(tool, "import_customers", provider_down)
    assert tool.main(["customers.jsonl"]) == exits.REJECTED
    assert json.loads(capsys.readouterr().out) == {
        "error": "provider",
        "type": "ProviderUnavailable",
        "message": "Hantera POST /resources/actors/asset/new: HTTP 503",
    }


async def test_an_import_needs_the_workers_database(settings: Settings, tmp_path: Path) -> None:
    """Opened elsewhere (another folder, another data folder), it would make an empty database
    that no worker reads, report success, and no registration would ever link."""
    file = tmp_path / "customers.jsonl"
    file.write_text('{"email": "nia@example.com", "name": "Nia"}\n')
    code, out = await run_import(settings, str(file))
    assert code == exits.USAGE and out["error"] == "configuration"
    assert out["message"].startswith(
        f"REGISTRATION_DATABASE: no local directory at {settings.database_path}"
    )
    assert "REGISTRATION_DATA_DIR" in out["message"]
    assert not settings.database_path.exists()

    async with open_providers(settings):  # as the worker opens it at its start
        pass
    code, out = await run_import(settings, str(file))
    assert code == exits.OK and [row["email"] for row in out["imported"]] == ["nia@example.com"]


async def test_an_import_row_with_an_unknown_key_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    file = tmp_path / "customers.jsonl"
    file.write_text(
        '{"email": "nia@example.com", "name": "Nia"}\n'
        '{"email": "oz@example.com", "name": "Oz", "Phone": "+46 70 123 45 67"}\n'
    )
    code, out = await run_import(settings, str(file))
    assert code == exits.USAGE and out["error"] == "invalid_row"
    assert (out["line"], out["field"]) == (2, "Phone")
    assert out["message"] == f"{file} line 2, Phone: Extra inputs are not permitted"


def test_an_import_file_with_a_byte_order_mark_is_read(settings: Settings, tmp_path: Path) -> None:
    """Spreadsheet exports often start with one; it is not part of the first row."""
    file = tmp_path / "customers.jsonl"
    file.write_text('\ufeff{"email": "nia@example.com", "name": "Nia"}\n', encoding="utf-8")
    (row,) = tool.read_customers(settings, file)
    assert (row.email, row.name) == ("nia@example.com", "Nia")
