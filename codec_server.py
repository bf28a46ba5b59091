"""Codec server: lets the Temporal UI and CLI show (and send) the encrypted payloads in plain JSON.

Run ``python codec_server.py [--host 127.0.0.1] [--port 8081]``, then point the UI at it
(``temporal server start-dev --ui-codec-endpoint http://127.0.0.1:8081``, or the UI's "Data
Encoder" settings) and the CLI with ``--codec-endpoint``; with a certificate and key
(``codec_server_tls_cert_file``, ``codec_server_tls_key_file``) it speaks HTTPS instead. It
implements Temporal's remote codec protocol: ``POST .../encode`` and ``POST .../decode`` take and
return ``{"payloads": [...]}``, the protobuf JSON form of ``temporal.api.common.v1.Payloads``; only
the last path segment counts, so the endpoints also work under a prefix such as
``/<namespace>/decode``.

The ``X-Namespace`` header is accepted for any namespace: the payload keys belong to this service,
not to a namespace, and who may call is decided by the network binding and the optional token.

Browsers reach it from the UI's origin, so CORS is allowed for ``codec_server_origins`` only, with
credentials (the UI's "include cross-origin credentials" option); the settings refuse ``*`` and
``null`` there, which would let any web site read decrypted payloads. With ``codec_server_token``
set, every call needs ``Authorization: Bearer <token>`` (the CLI's ``--codec-auth``); CORS
preflights do not, as browsers never send credentials on them.

Anything that can call ``/decode`` can read all workflow data, so by default it binds to loopback,
and it refuses to listen anywhere else without a token and TLS: whoever is on the path would
otherwise read the token and every decrypted payload, and an HTTPS UI may not call an ``http://``
endpoint (mixed content). On loopback it speaks plain HTTP unless given a certificate, as the
embedded dev UI calls it. It answers only requests addressed to a loopback name or its configured
host (the ``Host`` header), so a web page whose domain was rebound to 127.0.0.1 (DNS rebinding)
cannot read from it through the browser. It still never reveals a password: passwords (and
submitted codes) are sealed with a separate Fernet key (``REGISTRATION_SEAL_KEY``,
common/sealing.py) before they become payloads, and this server never loads that key, so a decoded
payload shows only the sealed token.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import contextmanager

import uvicorn
from google.protobuf import json_format
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from common.codec import EncryptionCodec, encryption_keys
from common.keys import KeyConfigError
from common.settings import (
    InvalidSettings,
    Port,
    PortInUse,
    Settings,
    env_variable,
    listening_socket,
    load_settings,
)

log = logging.getLogger(__name__)

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]
Endpoint = Callable[[Request], Awaitable[Response]]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""``Host`` header values of loopback requests (an IPv6 literal comes in brackets)."""
_PORT: TypeAdapter[int] = TypeAdapter(Port)
_TLS_VARIABLES = (
    f"{env_variable('codec_server_tls_cert_file')}, {env_variable('codec_server_tls_key_file')}"
)


def create_app(
    codec: PayloadCodec,
    *,
    allowed_origins: Sequence[str],
    token: str | None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
) -> Starlette:
    """The codec server as an ASGI app, so tests and other hosts can mount it. Requests whose
    ``Host`` is not one of ``allowed_hosts`` get a 400 (DNS rebinding)."""
    routes = [
        Route(path, _endpoint(transform, token), methods=["POST"])
        for name, transform in (("encode", codec.encode), ("decode", codec.decode))
        for path in (f"/{name}", f"/{{prefix:path}}/{name}")
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=list(allowed_origins),
        allow_methods=["POST", "OPTIONS"],
        allow_headers=["Content-Type", "X-Namespace", "Authorization"],
        allow_credentials=True,
    )
    hosts = Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return Starlette(routes=routes, middleware=[hosts, cors])


def _endpoint(transform: Transform, token: str | None) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        if token is not None and not _has_token(request, token):
            return PlainTextResponse(
                "missing or wrong bearer token", 401, headers={"WWW-Authenticate": "Bearer"}
            )
        if request.headers.get("content-type", "").partition(";")[0].strip() != "application/json":
            return PlainTextResponse("expected Content-Type: application/json", 415)
        try:
            payloads = json_format.Parse(await request.body(), Payloads())
        except (json_format.ParseError, UnicodeDecodeError) as err:
            return PlainTextResponse(f"body is not JSON of Payloads: {err}", 400)
        try:
            result = await transform(payloads.payloads)
        except ValueError as err:  # codecs reject payloads they cannot handle with ValueError
            return PlainTextResponse(str(err), 400)
        return Response(
            json_format.MessageToJson(Payloads(payloads=result)), media_type="application/json"
        )

    return endpoint


def _has_token(request: Request, token: str) -> bool:
    """Compared as bytes: ``compare_digest`` raises on non-ASCII text (an HTTP 500 instead of a
    401). Starlette decodes header bytes as Latin-1, so encoding back gives the bytes as sent,
    which a client sends in UTF-8 for a token that is not ASCII."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("latin-1"), token.encode()
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _host_header(host: str) -> str:
    """``host`` as a ``Host`` header names it: an IPv6 literal in brackets."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host.lower()


def app_from_settings(settings: Settings) -> Starlette:
    """The codec server as configured (also run inside ``worker.py --dev``). Beyond loopback it
    needs a token, as whoever reaches it could otherwise decrypt every payload, and TLS, as
    whoever is on the path could otherwise read the token and the payloads. Every missing one is
    named at once, so a refused start is fixed in one go."""
    host = settings.codec_server_host
    if not _is_loopback(host):
        beyond = (
            f"and the codec server would listen on {host} ({env_variable('codec_server_host')}),"
            " beyond loopback, where"
        )
        problems = []
        if settings.codec_server_token is None:
            problems.append(
                f"{env_variable('codec_server_token')}: not set, {beyond} whoever reaches it can"
                " decrypt every payload: set a token, or listen on 127.0.0.1"
            )
        if settings.codec_server_tls_cert_file is None:
            problems.append(
                f"{_TLS_VARIABLES}: not set, {beyond} whoever is on the path reads the token and"
                " every decrypted payload, and an HTTPS UI cannot call it: set both, or listen on"
                " 127.0.0.1"
            )
        if problems:
            raise InvalidSettings("; ".join(problems))
    keys, current_key_id = encryption_keys(settings)
    token = settings.codec_server_token.get_secret_value() if settings.codec_server_token else None
    return create_app(
        EncryptionCodec(keys, current_key_id),
        allowed_origins=settings.codec_server_origins,
        token=token,
        allowed_hosts=list(dict.fromkeys([*LOOPBACK_HOSTS, _host_header(host)])),
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside another program (``worker.py --dev``), which handles SIGINT/SIGTERM itself.
    uvicorn's own handlers would stop the codec server at the first signal and, once stopped,
    raise the signal again, which the worker would take for a second Ctrl-C ("stop at once")."""

    @contextmanager
    def capture_signals(self) -> Generator[None]:
        yield


def bound_server(settings: Settings, *, embedded: bool) -> tuple[uvicorn.Server, socket.socket]:
    """The configured codec server and its listening socket. Bound here, so a taken port is
    ``PortInUse`` naming the variable: uvicorn would ``sys.exit(3)`` (3 means "Temporal
    unreachable" in this project). ``embedded``: run inside the worker (see ``_EmbeddedServer``),
    logging only warnings."""
    app = app_from_settings(settings)
    # lifespan off: the app has no start-up/shutdown hooks; "on" logs a traceback on exit.
    config = uvicorn.Config(
        app,
        log_level="warning" if embedded else "info",
        lifespan="off",
        ssl_certfile=settings.codec_server_tls_cert_file,
        ssl_keyfile=settings.codec_server_tls_key_file,
    )
    # Loaded now, not when serving starts: a key that does not match its certificate would be a
    # traceback from inside uvicorn, and inside the worker a codec server that silently never ran.
    try:
        config.load()
    except OSError as err:  # ssl.SSLError included
        raise InvalidSettings(f"{_TLS_VARIABLES}: cannot serve HTTPS with them: {err}") from None
    listener = listening_socket(
        settings.codec_server_host, settings.codec_server_port, "codec_server_port"
    )
    server = _EmbeddedServer if embedded else uvicorn.Server
    return server(config), listener


def server_url(settings: Settings) -> str:
    """Where the UI and the CLI reach the configured codec server: ``https`` with TLS on."""
    scheme = "https" if settings.codec_server_tls_cert_file is not None else "http"
    return f"{scheme}://{_host_header(settings.codec_server_host)}:{settings.codec_server_port}"


def _port(text: str) -> int:
    try:
        return _PORT.validate_python(text)
    except ValidationError as err:
        raise argparse.ArgumentTypeError(err.errors()[0]["msg"]) from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Temporal codec server for encrypted payloads.")
    try:
        settings = load_settings()
    except InvalidSettings as err:
        parser.exit(2, f"configuration error: {err}\n")
    parser.add_argument("--host", default=settings.codec_server_host)
    parser.add_argument("--port", type=_port, default=settings.codec_server_port)
    args = parser.parse_args(argv)
    if not settings.encryption:
        parser.exit(2, "REGISTRATION_ENCRYPTION is off: payloads are plain, nothing to decode\n")
    logging.basicConfig(level=logging.INFO)
    settings = settings.model_copy(
        update={"codec_server_host": args.host, "codec_server_port": args.port}
    )
    try:
        server, listener = bound_server(settings, embedded=False)
    except (InvalidSettings, KeyConfigError, PortInUse) as err:
        parser.exit(2, f"configuration error: {err}\n")
    log.info("codec server on %s", server_url(settings))
    server.run(sockets=[listener])


if __name__ == "__main__":
    main()
