"""Misconfiguration stops the worker at start-up with a message naming the setting."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from activities.errors import ConfigurationError
from activities.providers import open_providers
from activities.providers.hantera import HanteraCustomers
from activities.providers.local import LocalIdentity
from activities.providers.outbox import OutboxMail
from common.settings import (
    DURATION,
    InvalidSettings,
    duration_text,
    env_variable,
    load_settings,
)
from common.temporal import connect_config
from starter.cli import activation_ttl
from tests.stack import Remote, make_settings

REPO = Path(__file__).resolve().parent.parent


async def test_step_5_is_one_transaction_only_on_one_local_file(tmp_path: Path) -> None:
    async with open_providers(make_settings(tmp_path)) as providers:
        assert isinstance(providers.identity, LocalIdentity)
        assert providers.one_step_activation() is providers.identity.directory
        wrapped = dataclasses.replace(providers, customers=Remote(providers.customers))
        assert wrapped.one_step_activation() is None


async def test_unknown_provider_names_the_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, customers_provider="shopify")
    with pytest.raises(ConfigurationError, match="REGISTRATION_CUSTOMERS_PROVIDER='shopify'"):
        async with open_providers(settings):
            pass


async def test_missing_hantera_credentials_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BASE_URL", "CLIENT_ID", "CLIENT_SECRET"):
        monkeypatch.delenv(f"REGISTRATION_HANTERA_{name}", raising=False)
    settings = make_settings(tmp_path, identity_provider="hantera")
    with pytest.raises(ConfigurationError, match="REGISTRATION_HANTERA_BASE_URL"):
        async with open_providers(settings):
            pass


async def test_roles_compose_independently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRATION_HANTERA_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("REGISTRATION_HANTERA_CLIENT_ID", "id")
    monkeypatch.setenv("REGISTRATION_HANTERA_CLIENT_SECRET", "secret")
    settings = make_settings(tmp_path, customers_provider="hantera")
    async with open_providers(settings) as providers:
        assert isinstance(providers.identity, LocalIdentity)
        assert isinstance(providers.customers, HanteraCustomers)
        assert isinstance(providers.mail, OutboxMail)


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """``load_settings`` as a process starts it: from the environment, with no ``.env`` file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGISTRATION_DATA_DIR", str(tmp_path))
    return monkeypatch


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REGISTRATION_ACTIVATION_TTL", "PT0S"),
        ("REGISTRATION_ACTIVATION_TTL", "PT59S"),
        ("REGISTRATION_ACTIVATION_TTL", "P30DT1S"),
        ("REGISTRATION_ACTIVATION_TTL", "soon"),
        ("REGISTRATION_MAX_ATTEMPTS_PER_CODE", "0"),
        ("REGISTRATION_MAX_ATTEMPTS_TOTAL", "0"),
        ("REGISTRATION_MAX_RESENDS", "-1"),
        ("REGISTRATION_CUSTOMER_NUMBER_PREFIX", "cust"),
        ("REGISTRATION_PASSWORD_MAX_LENGTH", "1025"),
        ("REGISTRATION_SMTP_TIMEOUT_SECONDS", "0"),
        ("REGISTRATION_DEV_SERVER_PORT", "99999"),
        ("REGISTRATION_DEV_UI_PORT", "0"),
        ("REGISTRATION_CODEC_SERVER_PORT", "70000"),
        ("REGISTRATION_SMTP_PORT", "65536"),
    ],
)
def test_invalid_setting_names_the_variable(
    environment: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """The registration policy's bounds hold at start-up, not only when a registration starts."""
    environment.setenv(variable, value)
    with pytest.raises(InvalidSettings, match=rf"^{variable}: "):
        load_settings()


@pytest.mark.parametrize(
    ("value", "ttl"), [("PT1M", timedelta(minutes=1)), ("P30D", timedelta(days=30))]
)
def test_activation_ttl_bounds_are_inclusive(
    environment: pytest.MonkeyPatch, value: str, ttl: timedelta
) -> None:
    environment.setenv("REGISTRATION_ACTIVATION_TTL", value)
    assert load_settings().activation_ttl == ttl


@pytest.mark.parametrize(
    ("variable", "value", "field", "duration"),
    [
        ("REGISTRATION_ACTIVATION_TTL", "86400", "activation_ttl", timedelta(hours=24)),
        ("REGISTRATION_ACTIVATION_TTL", "PT24H", "activation_ttl", timedelta(hours=24)),
        ("REGISTRATION_RESEND_INTERVAL", " 90 ", "resend_interval", timedelta(seconds=90)),
        ("REGISTRATION_RESEND_INTERVAL", "PT2M", "resend_interval", timedelta(minutes=2)),
        ("REGISTRATION_ACTIVATION_TTL", "24h", "activation_ttl", timedelta(hours=24)),
        ("REGISTRATION_RESEND_INTERVAL", "90s", "resend_interval", timedelta(seconds=90)),
    ],
)
def test_durations_take_seconds_a_unit_or_iso_8601(
    environment: pytest.MonkeyPatch, variable: str, value: str, field: str, duration: timedelta
) -> None:
    environment.setenv(variable, value)
    assert getattr(load_settings(), field) == duration


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("REGISTRATION_ACTIVATION_TTL", "99999999999999", "999,999,999 days"),
        ("REGISTRATION_ACTIVATION_TTL", "٨٦٤٠٠", "valid timedelta"),  # Arabic-Indic digits
        ("REGISTRATION_CODEC_SERVER_ORIGINS", "http://localhost:8233", "not a JSON list"),
        ("REGISTRATION_CODEC_SERVER_ORIGINS", '"http://localhost:8233"', "valid list"),
        ("REGISTRATION_SMTP_SECURITY", "ssl", "'starttls', 'tls' or 'none'"),
        ("REGISTRATION_SMTP_SECURITY", "true", "'starttls', 'tls' or 'none'"),
        ("REGISTRATION_SMTP_SEND_DEADLINE_SECONDS", "0", "greater than 0"),
        ("REGISTRATION_SMTP_SEND_DEADLINE_SECONDS", "-5", "greater than 0"),
        ("REGISTRATION_SMTP_CA_FILE", "no-such-ca.pem", "does not point to a file"),
    ],
)
def test_a_bad_value_is_named_by_its_variable_with_the_reason(
    environment: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    environment.setenv(variable, value)
    with pytest.raises(InvalidSettings, match=rf"^{variable}: .*{words}"):
        load_settings()


@pytest.mark.parametrize(
    "variable",
    [
        "REGISTRATION_SEAL_KEY",
        "REGISTRATION_CODE_KEY",
        "REGISTRATION_ID_KEY",
        "REGISTRATION_ENCRYPTION_KEYS",
        "REGISTRATION_CODEC_SERVER_TOKEN",
    ],
)
@pytest.mark.parametrize("value", ["", "  "])
def test_a_blank_secret_is_an_error_not_unset(
    environment: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A missing Kubernetes secret arrives as an empty variable: it must not mean generated dev
    keys, or a codec server without a token."""
    environment.setenv(variable, value)
    with pytest.raises(InvalidSettings, match=rf"^{variable}: .*is empty"):
        load_settings()
    assert not (Path(os.environ["REGISTRATION_DATA_DIR"]) / "keys").exists()


def test_password_max_length_below_the_min_names_both(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("REGISTRATION_PASSWORD_MIN_LENGTH", "200")
    with pytest.raises(
        InvalidSettings,
        match=r"^REGISTRATION_PASSWORD_MAX_LENGTH: .*below REGISTRATION_PASSWORD_MIN_LENGTH",
    ):
        load_settings()


def test_codec_server_origins_follow_the_dev_ui_port(environment: pytest.MonkeyPatch) -> None:
    assert load_settings().codec_server_origins == [
        "http://localhost:8233",
        "http://127.0.0.1:8233",
    ]
    environment.setenv("REGISTRATION_DEV_UI_PORT", "9233")
    assert load_settings().codec_server_origins == [
        "http://localhost:9233",
        "http://127.0.0.1:9233",
    ]
    environment.setenv("REGISTRATION_CODEC_SERVER_ORIGINS", '["https://temporal.example.com"]')
    assert load_settings().codec_server_origins == ["https://temporal.example.com"]


@pytest.mark.parametrize("wildcard", ["*", "null"])
def test_codec_server_origins_refuse_a_wildcard(
    environment: pytest.MonkeyPatch, wildcard: str
) -> None:
    """Either would let any web site read decrypted payloads from the codec server."""
    environment.setenv(
        "REGISTRATION_CODEC_SERVER_ORIGINS", f'["http://localhost:8233", "{wildcard}"]'
    )
    with pytest.raises(
        InvalidSettings,
        match=rf"^REGISTRATION_CODEC_SERVER_ORIGINS: .*'{re.escape(wildcard)}' would let any web",
    ):
        load_settings()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            "REGISTRATION_CODEC_SERVER_TLS_CERT_FILE",
            "^REGISTRATION_CODEC_SERVER_TLS_KEY_FILE: .*not set, but"
            " REGISTRATION_CODEC_SERVER_TLS_CERT_FILE is:",
        ),
        (
            "REGISTRATION_CODEC_SERVER_TLS_KEY_FILE",
            "^REGISTRATION_CODEC_SERVER_TLS_KEY_FILE: .*set, but"
            " REGISTRATION_CODEC_SERVER_TLS_CERT_FILE is not:",
        ),
    ],
)
def test_codec_server_tls_needs_certificate_and_key(
    environment: pytest.MonkeyPatch, given: str, message: str
) -> None:
    Path("codec.pem").write_text("")  # only its existence is checked here
    environment.setenv(given, "codec.pem")
    with pytest.raises(InvalidSettings, match=message):
        load_settings()


def test_temporal_variables_may_be_in_the_env_file(environment: pytest.MonkeyPatch) -> None:
    """Like the service's own settings: the environment first, then ``.env``."""
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_PROFILE"):
        environment.delenv(name, raising=False)
    Path(".env").write_text("TEMPORAL_ADDRESS=temporal.example.com:7233\nTEMPORAL_NAMESPACE=shop\n")
    config = connect_config()
    assert (config["target_host"], config["namespace"]) == ("temporal.example.com:7233", "shop")
    environment.setenv("TEMPORAL_ADDRESS", "127.0.0.1:7999")
    assert connect_config()["target_host"] == "127.0.0.1:7999"


def test_every_error_is_named_by_its_variable(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("REGISTRATION_ACTIVATION_TTL", "P31D")
    environment.setenv("REGISTRATION_MAX_RESENDS", "-1")
    with pytest.raises(InvalidSettings) as error:
        load_settings()
    assert "REGISTRATION_ACTIVATION_TTL: " in str(error.value)
    assert "REGISTRATION_MAX_RESENDS: " in str(error.value)
    assert "activation_ttl" not in str(error.value)


def test_variable_names_come_from_the_settings_model() -> None:
    assert env_variable("activation_ttl") == "REGISTRATION_ACTIVATION_TTL"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REGISTRATION_MAIL_PROVIDER", "pigeon", "REGISTRATION_MAIL_PROVIDER='pigeon'"),
        ("REGISTRATION_ACTIVATION_TTL", "PT0S", "REGISTRATION_ACTIVATION_TTL: "),
    ],
)
async def test_worker_exits_with_the_setting_named(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    environment = {
        **os.environ,
        "REGISTRATION_DATA_DIR": str(tmp_path),
        variable: value,
        "TEMPORAL_ADDRESS": "127.0.0.1:9",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", cwd=REPO, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert message in stderr.decode()
    assert "Traceback" not in stderr.decode()


@pytest.mark.parametrize("outbox", ["/proc/outbox", "a-file/outbox"])
async def test_an_outbox_that_cannot_take_mail_is_named_at_start_up(
    tmp_path: Path, outbox: str
) -> None:
    """Found only when the first mail is sent, it would be retried while the worker said it was
    ready, and registrations would wait in ``starting``."""
    (tmp_path / "a-file").write_text("not a folder")
    settings = make_settings(tmp_path, outbox_dir=tmp_path / outbox)
    with pytest.raises(ConfigurationError, match=r"^REGISTRATION_OUTBOX_DIR: cannot write mail"):
        async with open_providers(settings):
            pass


async def test_a_missing_outbox_is_made_at_start_up(tmp_path: Path) -> None:
    async with open_providers(make_settings(tmp_path, outbox_dir=tmp_path / "new" / "outbox")):
        assert (tmp_path / "new" / "outbox").is_dir()
        assert not list((tmp_path / "new" / "outbox").iterdir())  # the probe left nothing


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("REGISTRATION_DATADIR", "did you mean REGISTRATION_DATA_DIR?"),
        ("registration_max_resend", "did you mean REGISTRATION_MAX_RESENDS?"),
        ("REGISTRATION_SMTP_STARTTLS", "the REGISTRATION_SMTP_* settings are "),
        ("REGISTRATION_WHATEVER", "see the configuration reference in README.md"),
    ],
)
def test_a_variable_that_names_no_setting_is_refused(
    environment: pytest.MonkeyPatch, variable: str, hint: str
) -> None:
    """The settings would ignore it, leaving in force a default its operator meant to change."""
    environment.setenv(variable, "1")
    with pytest.raises(InvalidSettings, match=rf"^{variable.upper()}: not a setting") as error:
        load_settings()
    assert hint in str(error.value)


@pytest.mark.parametrize(
    "variable",
    [
        "REGISTRATION_SERVICE_HOST",
        "REGISTRATION_SERVICE_PORT_HTTP",
        "REGISTRATION_PORT",
        "REGISTRATION_PORT_8080_TCP_ADDR",
        "REGISTRATION_CODEC_SERVICE_PORT",
        "REGISTRATION_CODEC_PORT_8081_TCP",
    ],
)
def test_kubernetes_service_links_are_not_refused(
    environment: pytest.MonkeyPatch, variable: str
) -> None:
    """Kubernetes sets them in every pod for a Service named ``registration``(``-codec``)."""
    environment.setenv(variable, "tcp://10.0.0.12:8080")
    load_settings()


def test_unknown_variables_in_env_file_are_refused_and_hantera_keeps_its_own(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("REGISTRATION_HANTERA_BASE_URL", "https://shop.hantera.cloud")
    Path(".env").write_text("REGISTRATION_SMTP_SECURITY=tls\nREGISTRATION_SMTP_STARTTLS=false\n")
    with pytest.raises(InvalidSettings, match=r"^REGISTRATION_SMTP_STARTTLS: not a setting"):
        load_settings()
    Path(".env").write_text("REGISTRATION_SMTP_SECURITY=tls\n")
    assert load_settings().smtp_port == 465


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"TEMPORAL_PROFILE": "nope"}, r"^TEMPORAL_PROFILE: no profile 'nope' in .*temporal\.toml"),
        (
            {"TEMPORAL_CONFIG_FILE": "bad.toml"},
            r"^TEMPORAL_CONFIG_FILE: bad\.toml: .*TOML parse error at line 2, column \d+: \S",
        ),
        (
            {"TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent/cert.pem"},
            r"^TEMPORAL_TLS_CLIENT_CERT_PATH: cannot read /nonexistent/cert\.pem: No such file",
        ),
        (
            {"TEMPORAL_CONFIG_FILE": "good.toml", "TEMPORAL_PROFILE": "cloud"},
            r"^TEMPORAL_CONFIG_FILE \(good\.toml\): cannot read /nonexistent/key\.pem",
        ),
        ({"TEMPORAL_TLS": "off"}, r"^TEMPORAL_TLS: 'off' is neither true nor false"),
        ({"TEMPORAL_TLS": ""}, r"^TEMPORAL_TLS: '' is neither true nor false"),
    ],
)
def test_temporal_connection_errors_name_the_variable(
    environment: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    """envconfig's own errors (a ``ConfigError`` of its bridge, an ``OSError``) name neither."""
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_CONFIG_FILE", "TEMPORAL_PROFILE"):
        environment.delenv(name, raising=False)
    Path("bad.toml").write_text('[profile.default]\napi_key = "secret-key\n')
    Path("good.toml").write_text(
        '[profile.cloud]\naddress = "cloud.example.com:7233"\n'
        '[profile.cloud.tls]\nclient_key_path = "/nonexistent/key.pem"\n'
    )
    for name, value in variables.items():
        environment.setenv(name, value)
    with pytest.raises(InvalidSettings, match=message) as error:
        connect_config()
    assert "\n" not in str(error.value) and "secret-key" not in str(error.value)


@pytest.mark.parametrize(
    ("value", "tls"), [("true", True), ("FALSE", False), ("1", True), ("0", False)]
)
def test_temporal_tls_takes_what_envconfig_reads(
    environment: pytest.MonkeyPatch, value: str, tls: bool
) -> None:
    environment.setenv("TEMPORAL_TLS", value)
    assert bool(connect_config()["tls"]) is tls


def test_a_profile_from_the_config_file_is_used(environment: pytest.MonkeyPatch) -> None:
    environment.delenv("TEMPORAL_ADDRESS", raising=False)
    Path("temporal.toml").write_text('[profile.shop]\naddress = "shop.example.com:7233"\n')
    environment.setenv("TEMPORAL_CONFIG_FILE", "temporal.toml")
    environment.setenv("TEMPORAL_PROFILE", "shop")
    assert connect_config()["target_host"] == "shop.example.com:7233"


@pytest.mark.parametrize(
    ("text", "ttl"),
    [("24h", timedelta(hours=24)), ("PT2H", timedelta(hours=2)), ("86400", timedelta(days=1))],
)
def test_the_ttl_flag_takes_what_the_setting_takes(text: str, ttl: timedelta) -> None:
    assert activation_ttl(text) == ttl


def test_send_deadline_may_exceed_the_mail_activity_timeout(
    environment: pytest.MonkeyPatch,
) -> None:
    """The provider bounds each send by its activity's timeout, whichever that is
    (``test_smtp_send_ends_before_the_activity_attempt_times_out``): no setting can outlast it."""
    environment.setenv("REGISTRATION_SMTP_SEND_DEADLINE_SECONDS", "60")
    assert load_settings().smtp_send_deadline_seconds == 60


def test_settings_do_not_import_the_workflow(tmp_path: Path) -> None:
    """``common`` must not depend on ``workflows.registration``: importing it (with every
    activity) made each ``Settings()`` slower, and bounding a send is the provider's job. In a
    fresh interpreter: this one imported the workflow long ago."""
    check = (
        "import sys; from common.settings import Settings; Settings();"
        " assert 'workflows.registration' not in sys.modules, 'imported'"
    )
    repository = Path(__file__).resolve().parent.parent
    environment = {"PYTHONPATH": str(repository), "REGISTRATION_DATA_DIR": str(tmp_path)}
    command = [sys.executable, "-c", check]
    subprocess.run(command, check=True, cwd=tmp_path, env=environment)  # noqa: S603 (fixed)


@pytest.mark.parametrize(
    ("security", "port"),
    [("tls", 465), ("starttls", 587), ("none", 587)],
)
def test_smtp_port_follows_the_security_unless_set(
    environment: pytest.MonkeyPatch, security: str, port: int
) -> None:
    environment.setenv("REGISTRATION_SMTP_SECURITY", security)
    assert load_settings().smtp_port == port
    environment.setenv("REGISTRATION_SMTP_PORT", "2525")
    assert load_settings().smtp_port == 2525


@pytest.mark.parametrize(
    ("text", "value"),
    [("7d", timedelta(days=7)), ("36h", timedelta(hours=36)), ("90m", timedelta(minutes=90)),
     ("45s", timedelta(seconds=45)), ("1.5s", timedelta(seconds=1.5))],
)  # fmt: skip
def test_a_duration_is_logged_as_the_setting_takes_it(text: str, value: timedelta) -> None:
    """Log lines name a duration setting's value in its own shorthand, not "7 days, 0:00:00"."""
    assert duration_text(value) == text
    if text[:-1].isdigit():  # the shorthand takes whole numbers only
        assert DURATION.validate_python(text) == value
