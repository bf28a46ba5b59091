"""Codec server: lets the Temporal UI and CLI show (and send) the encrypted payloads in plain JSON.

Run ``python codec_server.py [--host 127.0.0.1] [--port 8081]``, then point the UI at it
(``temporal server start-dev --ui-codec-endpoint http://127.0.0.1:8081``, or the UI's "Data
Encoder" settings) and the CLI with ``--codec-endpoint``. It implements Temporal's remote codec
protocol: ``POST .../encode`` and ``POST .../decode`` take and return ``{"payloads": [...]}``, the
protobuf JSON form of ``temporal.api.common.v1.Payloads``; only the last path segment counts, so the
endpoints also work under a prefix such as ``/<namespace>/decode``.

The ``X-Namespace`` header is accepted for any namespace: the payload keys belong to this service,
not to a namespace, and who may call is decided by the network binding and the optional token.

Browsers reach it from the UI's origin, so CORS is allowed for ``codec_server_origins`` only, with
credentials (the UI's "include cross-origin credentials" option). With ``codec_server_token`` set,
every call needs ``Authorization: Bearer <token>`` (the CLI's ``--codec-auth``); CORS preflights do
not, as browsers never send credentials on them.

Anything that can call ``/decode`` can read all workflow data, so by default it binds to loopback.
It still never reveals a password: passwords (and submitted codes) are sealed with a separate
Fernet key (``REGISTRATION_SEAL_KEY``, common/sealing.py) before they become payloads, and this
server never loads that key, so a decoded payload shows only the sealed token.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence

import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from common.codec import EncryptionCodec, encryption_keys
from common.keys import KeyConfigError
from common.settings import InvalidSettings, Settings, load_settings

log = logging.getLogger(__name__)

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]
Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(
    codec: PayloadCodec, *, allowed_origins: Sequence[str], token: str | None
) -> Starlette:
    """The codec server as an ASGI app, so tests and other hosts can mount it."""
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
    return Starlette(routes=routes, middleware=[cors])


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Temporal codec server for encrypted payloads.")
    try:
        settings = load_settings()
    except InvalidSettings as err:
        parser.exit(2, f"configuration error: {err}\n")
    parser.add_argument("--host", default=settings.codec_server_host)
    parser.add_argument("--port", type=int, default=settings.codec_server_port)
    args = parser.parse_args(argv)
    if not settings.encryption:
        parser.exit(2, "REGISTRATION_ENCRYPTION is off: payloads are plain, nothing to decode\n")
    logging.basicConfig(level=logging.INFO)
    if settings.codec_server_token is None and not _is_loopback(args.host):
        log.warning(
            "codec server on %s without REGISTRATION_CODEC_SERVER_TOKEN: whoever reaches it can"
            " decrypt every payload",
            args.host,
        )
    try:
        app = app_from_settings(settings)
    except KeyConfigError as err:
        parser.exit(2, f"configuration error: {err}\n")
    uvicorn.run(app, host=args.host, port=args.port)


def app_from_settings(settings: Settings) -> Starlette:
    """The codec server as configured (also run inside ``worker.py --dev``)."""
    keys, current_key_id = encryption_keys(settings)
    token = settings.codec_server_token.get_secret_value() if settings.codec_server_token else None
    return create_app(
        EncryptionCodec(keys, current_key_id),
        allowed_origins=settings.codec_server_origins,
        token=token,
    )


if __name__ == "__main__":
    main()
