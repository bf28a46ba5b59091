"""Configuration shared by the worker, the starter and the tools.

Every setting comes from the environment (prefix ``REGISTRATION_``) or a ``.env`` file in the
working directory; ``load_settings`` names the offending variable when a value is invalid.
Secrets (keys, passwords) are ``SecretStr`` so they never show up in a repr or a log line.
Connection settings for Temporal itself are not here: they come from ``temporalio.envconfig``
(``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, TLS, API key), see ``common/temporal.py``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from dotenv import dotenv_values
from pydantic import (
    AnyHttpUrl,
    BeforeValidator,
    Field,
    FilePath,
    IPvAnyNetwork,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.identifiers import WorkflowIdMode
from common.policy import (
    ActivationTtl,
    Attempts,
    CustomerNumberPrefix,
    FailureWindow,
    Resends,
)

ENV_FILE = ".env"
"""Settings file in the working directory; the environment wins over it."""


Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port a process listens on or connects to: out of range, the socket call would raise an
``OverflowError`` long after start-up checked the settings."""

_DURATION_WITH_UNIT = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration_shorthand(value: object) -> object:
    """Seconds (``86400``) and a number with a unit (``90s``, ``15m``, ``24h``, ``7d``, as the
    CLI's ``--ttl`` always took) become a ``timedelta`` here; ISO 8601 (``PT24H``) passes on to
    pydantic. Pydantic would read an all-digit string as a clock time and refuse it ("invalid
    character in hour")."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    match = _DURATION_WITH_UNIT.fullmatch(text)
    if match is None:
        return value
    try:
        return timedelta(**{_UNITS[match[2]]: int(match[1])})
    except OverflowError:
        raise ValueError("duration out of range") from None


def duration_text(value: timedelta) -> str:
    """``value`` in the shorthand a duration setting takes, in its largest whole unit (``7d``,
    ``36h``, ``90s``): what a log line says about a setting, where ``str(timedelta)`` would say
    "7 days, 0:00:00"."""
    seconds = value.total_seconds()
    for letter, unit in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % unit == 0:
            return f"{int(seconds // unit)}{letter}"
    return f"{seconds:g}s"


def _off_or_duration(value: object) -> object:
    """A duration of at least a minute, or ``0``/``off``: nothing (``timedelta(0)``)."""
    if isinstance(value, str) and value.strip().lower() in {"off", "0", ""}:
        return timedelta(0)
    duration = DURATION.validate_python(value)
    if timedelta(0) < duration < timedelta(minutes=1):
        raise ValueError("at least 1 minute, or 0/off to turn it off")
    if duration < timedelta(0):
        raise ValueError("must not be negative")
    return duration


Duration = Annotated[timedelta, BeforeValidator(_duration_shorthand)]
"""A duration as settings and the CLI take it: ``86400`` (seconds), ``24h`` or ``PT24H``."""
DURATION: TypeAdapter[timedelta] = TypeAdapter(Duration)


class SmtpSecurity(StrEnum):
    """How the connection to the SMTP relay is protected (RFC 8314)."""

    STARTTLS = "starttls"
    """Plain connect, then STARTTLS before anything else is said (port 587). A server that does
    not offer it fails the send: never a fallback to plain text."""
    TLS = "tls"
    """Implicit TLS from the first byte (SMTPS, port 465), which RFC 8314 prefers: nothing can be
    stripped from a session that starts encrypted."""
    NONE = "none"
    """Plain text: only for a relay on loopback or a trusted network (Mailpit, a local Postfix)."""


class Settings(BaseSettings):
    """All knobs of the service, with the embedded defaults."""

    model_config = SettingsConfigDict(
        env_prefix="REGISTRATION_", env_file=ENV_FILE, extra="ignore", validate_default=True
    )

    task_queue: str = "registrations"
    data_dir: Path = Path(".data")
    """Where the embedded stack keeps its state: SQLite files, outbox, generated dev keys."""

    # Providers, chosen per role.
    identity_provider: str = "local"
    customers_provider: str = "local"
    mail_provider: str = "outbox"

    database: Path | None = None
    """SQLite file of the local identity/customers provider (``<data_dir>/directory.sqlite3``)."""
    outbox_dir: Path | None = None
    """Folder of the ``outbox`` mail provider (default ``<data_dir>/outbox``)."""

    # Keys. Left unset, the worker generates dev keys under <data_dir>/keys on its first start.
    seal_key: SecretStr | None = None
    """Fernet key(s), comma-separated, newest first: seals passwords (and codes) for the worker."""
    code_key: SecretStr | None = None
    """HMAC key for activation codes and link tokens (>= 32 bytes, urlsafe base64)."""
    id_key: SecretStr | None = None
    """HMAC key for ``workflow_id_mode=hashed``."""
    workflow_id_mode: WorkflowIdMode = WorkflowIdMode.EMAIL
    code_pattern: str = "[0-9]{6}"
    """The activation codes' format (a regular expression), which the client checks before a
    mistyped code costs an attempt: ours are 6 digits; an identity provider that makes its own
    codes declares its format, and the worker refuses to start unless this says the same."""

    # Registration policy (copied into each workflow's input, so a running workflow keeps its own).
    # Bounds: those of the workflow's ``RegistrationPolicy`` (``common/policy.py``), so that a
    # value every registration would refuse stops the process at start-up.
    activation_ttl: Annotated[ActivationTtl, BeforeValidator(_duration_shorthand)] = timedelta(
        hours=24
    )
    max_attempts_per_code: Attempts = 5
    max_attempts_total: Attempts = 20
    max_resends: Resends = 5
    resend_interval: Duration = timedelta(minutes=1)
    customer_number_prefix: CustomerNumberPrefix = "CUST"
    max_failures_per_window: Attempts = 100
    """Wrong codes an email may have across its registrations within ``failure_window``."""
    failure_window: Annotated[FailureWindow, BeforeValidator(_duration_shorthand)] = timedelta(
        hours=24
    )

    # Password policy (NIST SP 800-63B: length and blocklist, no composition rules).
    password_min_length: int = Field(8, ge=8)
    password_max_length: int = Field(128, ge=64, le=1024)

    # Mail content.
    shop_name: str = "Our shop"
    mail_from: str = "Our shop <no-reply@shop.localhost>"
    activation_link_base: str | None = None
    """If set, activation mails also carry a link ``<base>?email=..&token=..`` (192-bit token)."""
    password_reset_url: str = "http://localhost:8000/password-reset"  # noqa: S105 (a URL)

    # SMTP (mail_provider=smtp).
    smtp_host: str = "localhost"
    smtp_port: Port = 587
    """Unset, 465 with ``smtp_security=tls`` (``_smtps_port``)."""
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: SmtpSecurity = SmtpSecurity.STARTTLS
    smtp_ca_file: FilePath | None = None
    """PEM file of the CA(s) the relay's certificate must chain to, trusted instead of the
    system's: a private relay with an internal CA. Certificates are verified either way."""
    smtp_timeout_seconds: float = Field(20.0, gt=0)
    """Per socket operation (connect, each read or write), as ``smtplib`` applies it."""
    smtp_send_deadline_seconds: float = Field(25.0, gt=0)
    """Per send, from the call to the last reply: a server dripping bytes never trips the timeout
    above. Inside an activity the provider also ends a send before the attempt's start-to-close
    timeout (``activities/providers/smtp.py``), whichever timeout the step runs with."""

    # Visibility for support staff.
    search_attributes: bool = True
    """Set RegistrationStatus/RegistrationEmail/CustomerNumber/ActivationExpiresAt (they must be
    registered on the namespace; the embedded dev server does it)."""
    metrics_bind_address: str | None = "127.0.0.1:9464"
    """Prometheus endpoint of the worker (``/metrics``); empty to turn it off."""

    # The worker.
    workflow_sandbox: bool = False
    """Run workflow code in the SDK's sandbox, which refuses non-deterministic calls (the clock,
    randomness, I/O) at run time and re-imports the workflow module for each registration it
    runs. Off by default: with it a registration costs ~10 ms more worker CPU (16 ms without
    it, Argon2id aside) and each cached one ~0.1 MiB more memory (docs/capacity.md), and it
    checks only ``workflows/registration.py`` itself (its other modules are passed through).
    Determinism is guarded before release instead: the tests run the workflow sandboxed, and
    every recorded history replays with and without it (docs/design.md)."""
    worker_cache_size: int = Field(300, ge=2)
    """Registrations the worker keeps in memory between their steps (the SDK's sticky cache); one
    not cached is rebuilt from its history at its next step. 300, not the SDK's 1,000: with
    20,000 pending, 300 cached made activations faster (p50 1.13x the empty server's against
    1.51x: the worker's and the server's CPU per activation both grew with the cache, more than
    the extra rebuilds cost) and the worker smaller (205 MiB against 276), docs/benchmarks.md.
    Change it only after ``python -m bench pending --cache-size N`` at your size."""

    # The sweep of what compensation could not reach (workflows/sweep.py).
    sweep_interval: Annotated[timedelta, BeforeValidator(_off_or_duration)] = timedelta(hours=1)
    """How often the worker's schedule runs the sweep; ``0`` or ``off`` deletes the schedule."""
    sweep_grace: Annotated[Duration, Field(ge=timedelta(minutes=1))] = timedelta(minutes=15)
    """Records younger than this are not judged (an in-flight registration's fresh ones)."""

    # Embedded Temporal dev server (worker.py --dev).
    dev_server_port: Port = 7233
    dev_ui_port: Port = 8233
    dev_retention: Annotated[Duration, Field(ge=timedelta(days=1))] = timedelta(days=7)
    """How long the embedded server keeps a closed registration's history (the namespace's
    retention, set at every start): then it is deleted, so ``.data`` does not grow without bound.
    The dev server's own default is 1 day; at least a day here: staff and the sweep judge an
    ended registration by its closed history."""

    # Payload encryption (common/codec.py): everything Temporal stores is AES-256-GCM ciphertext.
    encryption: bool = True
    """Encrypt payloads with ``EncryptionCodec``; off only for debugging against a plain history."""
    encryption_keys: SecretStr | None = None
    """``keyid:base64urlkey`` pairs (32-byte keys), comma-separated, newest first."""
    encryption_key_file: Path | None = None
    """File with the same pairs, one per line, newest first (instead of ``encryption_keys``)."""

    # Codec server (codec_server.py) that lets the Temporal UI and CLI read encrypted payloads.
    codec_server_host: str = "127.0.0.1"
    codec_server_port: Port = 8081
    codec_server_origins: Annotated[list[str], NoDecode] = []
    """Browser origins (the Temporal UI) allowed to call the codec server, credentials included, as
    a JSON list; unset, the embedded UI's (``dev_ui_port``), see ``_origins_of_the_dev_ui``."""
    codec_server_token: SecretStr | None = None
    """If set, callers must send ``Authorization: Bearer <token>``."""
    codec_server_tls_cert_file: FilePath | None = None
    """PEM certificate (chain) that makes the codec server HTTPS; required beyond loopback, where
    the token and every decrypted payload would cross the network in clear text, and where an
    HTTPS UI may not call an ``http://`` endpoint (mixed content)."""
    codec_server_tls_key_file: FilePath | None = None
    """Its private key (PEM, not encrypted); set with the certificate or not at all."""

    # HTTP API and hosted pages (starter/http): ``python -m starter.http``, also in ``make run``.
    api_host: str = "127.0.0.1"
    api_port: Port = 8000
    api_cors_origins: Annotated[list[str], NoDecode] = []
    """Storefront origins whose pages may call ``/v1`` from a browser (JSON list; ``*`` for any:
    the API takes no cookies, so an origin gains nothing a server-side caller lacks)."""
    api_trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = []
    """Addresses or networks of reverse proxies whose ``X-Forwarded-For`` is believed (JSON
    list); from anyone else the peer's address is the client's."""
    api_staff_token: SecretStr | None = None
    """Bearer token of the staff endpoints; unset, they refuse every call."""
    api_rate_limit_per_address: str = "5/15minutes"
    """Starts, activations and resends per client address, each counted on its own (the ``limits``
    library's notation, several separated by ``;``: ``5/15minutes;50/day``)."""
    api_rate_limit_per_email: str = "10/15minutes"
    """The same per email address (its registration), whoever asks."""
    api_rate_limit_storage: SecretStr | None = None
    """Where the counts are kept: unset, in this process's memory; ``redis://host:6379/0`` (or
    ``rediss://``) to share them between several API processes."""
    api_max_body_bytes: int = Field(16384, ge=1024, le=1048576)
    api_tls_cert_file: FilePath | None = None
    """PEM certificate chain: the API speaks HTTPS itself (else behind a TLS-terminating proxy)."""
    api_tls_key_file: FilePath | None = None
    # The hosted pages (/register, /activate): the shop's look and where a customer goes next.
    # The shop's name is ``shop_name``, the one the mails carry.
    api_login_url: AnyHttpUrl = AnyHttpUrl("http://localhost:8000/login")
    """The shop's sign-in page, linked from the page that says the account is active."""
    api_logo_url: AnyHttpUrl | None = None
    """An image shown above every page (``https://`` in production); unset, the shop's name."""
    api_accent_color: str = Field("#1f5fbf", pattern=r"^#[0-9a-fA-F]{6}$")
    """The pages' accent (buttons, links, focus rings) as ``#rrggbb``; the text on it is black or
    white, whichever contrasts more."""
    api_csrf_key: SecretStr | None = None
    """Signs the pages' CSRF tokens (32 characters at least). Unset, each process makes its own
    at start: set one shared key when several API processes serve the pages without sticky
    sessions, or a form rendered by one is refused by another."""

    @field_validator("code_pattern")
    @classmethod
    def _a_pattern(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"not a regular expression: {err}") from None
        if compiled.fullmatch(""):
            raise ValueError("matches an empty code")
        return pattern

    @field_validator("password_max_length")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        """Otherwise every password would be refused, and only when someone registers."""
        minimum = info.data.get("password_min_length")
        if minimum is not None and value < minimum:
            raise ValueError(f"below {env_variable('password_min_length')} ({minimum})")
        return value

    @field_validator(
        "seal_key",
        "code_key",
        "id_key",
        "encryption_keys",
        "codec_server_token",
        "api_staff_token",
        "api_rate_limit_storage",
        "api_csrf_key",
    )
    @classmethod
    def _set_means_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        """A blank secret is a mistake (a Kubernetes secret that is missing, say), not "unset":
        taken for unset it would mean generated dev keys, or a codec server without a token."""
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty: set a value, or unset the variable for the default")
        return value

    @field_validator(
        "codec_server_origins", "api_cors_origins", "api_trusted_proxies", mode="before"
    )
    @classmethod
    def _json_list(cls, value: object) -> object:
        """Parsed here, not by pydantic-settings, so a bad value is named by its variable (the
        library's own error names only the field)."""
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError('not a JSON list, e.g. ["http://localhost:8233"]') from None

    @field_validator("codec_server_origins")
    @classmethod
    def _only_named_origins(cls, value: list[str]) -> list[str]:
        """No wildcard, ever: ``/decode`` answers with decrypted payloads, on loopback without a
        token, so the browser's same-origin policy is all that keeps other web sites from reading
        them. Starlette's CORS middleware, given ``*`` with credentials allowed, echoes whatever
        ``Origin`` a request brings, so every page open in the developer's browser could read
        them. ``null`` is no safer: it is the origin of any sandboxed frame, which any site can
        open."""
        for origin in value:
            if origin in ("*", "null"):
                raise ValueError(
                    f"{origin!r} would let any web site read decrypted payloads: list the origins"
                    ' of the Temporal UI, e.g. ["https://temporal.example.com"]'
                )
        return value

    @field_validator("api_rate_limit_per_address", "api_rate_limit_per_email")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        """Checked at start-up, not at the first request: ``5/15minutes``, ``10 per hour``."""
        from limits import parse_many  # the API's library; only its settings need it here

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                "not a rate limit such as 5/15minutes or 10 per hour (several separated by ;)"
            ) from None
        return value

    @field_validator("api_csrf_key")
    @classmethod
    def _long_csrf_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("shorter than 32 characters: use a long random key")
        return value

    @field_validator("api_staff_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("shorter than 16 characters: use a long random token")
        return value

    @field_validator("api_tls_key_file")
    @classmethod
    def _api_key_with_its_certificate(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if "api_tls_cert_file" not in info.data:
            return value
        if (value is None) != (info.data["api_tls_cert_file"] is None):
            certificate = env_variable("api_tls_cert_file")
            raise ValueError(f"set both, or neither, of it and {certificate}")
        return value

    @field_validator("codec_server_tls_key_file")
    @classmethod
    def _key_with_its_certificate(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """Both or neither: a key alone would leave the server on plain HTTP although its operator
        asked for HTTPS, and a certificate alone is a forgotten key (a key kept in the
        certificate's file would be handed out with the certificate)."""
        if "codec_server_tls_cert_file" not in info.data:
            return value  # an invalid certificate setting, reported as such
        certificate = env_variable("codec_server_tls_cert_file")
        if value is None and info.data["codec_server_tls_cert_file"] is not None:
            raise ValueError(f"not set, but {certificate} is: set both, or neither")
        if value is not None and info.data["codec_server_tls_cert_file"] is None:
            raise ValueError(f"set, but {certificate} is not: set both, or neither")
        return value

    @model_validator(mode="after")
    def _origins_of_the_dev_ui(self) -> Self:
        """Unset, the origins follow ``dev_ui_port``: fixed at 8233 they would lock out an
        embedded UI moved to another port."""
        if "codec_server_origins" not in self.model_fields_set:
            self.codec_server_origins = [
                f"http://{host}:{self.dev_ui_port}" for host in ("localhost", "127.0.0.1")
            ]
        return self

    @model_validator(mode="after")
    def _smtps_port(self) -> Self:
        """Unset, the port follows ``smtp_security``: implicit TLS spoken to the submission port
        587 would fail with an obscure TLS error ("wrong version number")."""
        if "smtp_port" not in self.model_fields_set and self.smtp_security is SmtpSecurity.TLS:
            self.smtp_port = 465
        return self

    @property
    def database_path(self) -> Path:
        return self.database or self.data_dir / "directory.sqlite3"

    @property
    def outbox_path(self) -> Path:
        return self.outbox_dir or self.data_dir / "outbox"


class InvalidSettings(ValueError):
    """An invalid setting; the message names its environment variable, as the operator set it."""


def env_variable(field: str) -> str:
    """The variable a setting is read from (no setting has an alias), as it is written."""
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


class PortInUse(OSError):
    """A port a process needs is taken (or its host cannot be bound); the message names its
    variable."""


def listening_socket(host: str, port: int, field: str) -> socket.socket:
    """A socket listening on ``host:port`` (the port setting ``field``); one that cannot listen
    is ``PortInUse`` naming the variable. Bound here, not by uvicorn or the dev server: they
    report a taken port by ``sys.exit(3)`` from inside a task, or as a start-up timeout."""
    try:
        return socket.create_server((host, port))
    except OSError as err:
        # The message names host and port: "... (while attempting to bind on address ...)".
        raise PortInUse(f"{env_variable(field)}: cannot listen: {err.strerror}") from None


def load_settings(provider_prefixes: tuple[str, ...] | None = None) -> Settings:
    """The settings of a process's start-up. Invalid values raise ``InvalidSettings`` naming their
    variables: pydantic names only the field (``activation_ttl``), not what to fix. So does a
    ``REGISTRATION_*`` variable that names no setting (``unknown_variables``).

    Providers read and check their own ``REGISTRATION_<PROVIDER>_*`` settings: the worker, which
    knows every provider, passes their ``provider_prefixes`` to be left to them. A process that
    does not know the providers (the client, the codec server) passes ``None``: it then leaves
    alone every ``REGISTRATION_<GROUP>_*`` variable of a group that no setting of its own has,
    and the worker reports the typos among them."""
    try:
        settings = Settings()
    except ValidationError as err:
        problems = [
            f"{env_variable(str(error['loc'][0]))}: {error['msg']}" for error in err.errors()
        ]
        raise InvalidSettings("; ".join(problems)) from None
    known = {env_variable(field) for field in Settings.model_fields}
    if provider_prefixes is None:
        groups = {field.split("_")[0] for field in Settings.model_fields if "_" in field}
        skip = _other_groups(groups)
    else:
        skip = provider_prefixes
    unknown = unknown_variables(env_variable(""), known, skip=skip)
    if unknown:
        raise InvalidSettings(unknown_message(unknown, known))
    return settings


def _other_groups(groups: set[str]) -> tuple[str, ...]:
    """The ``REGISTRATION_<GROUP>_`` prefixes in the environment whose group no setting has."""
    prefix = env_variable("")
    names = {name.upper() for name in [*os.environ, *dotenv_values(ENV_FILE)]}
    found = {
        name[len(prefix) :].split("_")[0]
        for name in names
        if name.startswith(prefix) and name[len(prefix) :].count("_") >= 1
    }
    return tuple(f"{prefix}{group}_" for group in sorted(found) if group.lower() not in groups)


KUBERNETES_SERVICE_LINK = re.compile(
    r"(\w+_)?(SERVICE_(HOST|PORT(_\w+)?)|PORT(_\d+_(TCP|UDP|SCTP)(_(ADDR|PORT|PROTO))?)?)"
)
"""What Kubernetes puts into every pod for each Service of its namespace (service links): a
Service named ``registration`` or ``registration-codec`` gives ``REGISTRATION_SERVICE_HOST``,
``REGISTRATION_PORT_8080_TCP_ADDR``, ``REGISTRATION_CODEC_PORT`` and the like. Not ours, so not
refused; the names of our own settings never end like these."""


def unknown_variables(prefix: str, known: set[str], skip: tuple[str, ...] = ()) -> list[str]:
    """Names in the environment or ``.env`` that start with ``prefix`` but no setting reads. The
    settings would ignore them without a word, so a typo (``REGISTRATION_DATADIR``) or a renamed
    setting (``REGISTRATION_SMTP_STARTTLS``, now ``REGISTRATION_SMTP_SECURITY``) would leave a
    default in force that its operator thinks changed. ``skip`` holds the prefixes of settings
    read elsewhere (``REGISTRATION_<PROVIDER>_*``: each provider checks its own); Kubernetes
    service links (``KUBERNETES_SERVICE_LINK``) are left alone."""
    names = {name.upper() for name in [*os.environ, *dotenv_values(ENV_FILE)]}
    return sorted(
        name
        for name in names
        if name.startswith(prefix)
        and not name.startswith(skip)
        and name not in known
        and not KUBERNETES_SERVICE_LINK.fullmatch(name[len(prefix) :])
    )


def unknown_message(unknown: list[str], known: set[str]) -> str:
    """One line naming each unknown variable, with the setting meant when one is close, or else
    the settings of its group (``REGISTRATION_SMTP_*``)."""
    return "; ".join(f"{name}: {_not_a_setting(name, sorted(known))}" for name in unknown)


def _not_a_setting(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.9)
    if close:
        return f"not a setting; did you mean {close[0]}?"
    group = "_".join(name.split("_")[:2]) + "_"
    related = [known_name for known_name in known if known_name.startswith(group)]
    if name.count("_") >= 2 and related:
        return f"not a setting; the {group}* settings are {', '.join(related)}"
    return "not a setting (see the configuration reference in README.md)"
