"""The codec server over real HTTP(S): Temporal's JSON protocol, CORS for the UI, the token and
TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from starlette.applications import Starlette
from temporalio.api.common.v1 import Payloads
from temporalio.contrib.pydantic import pydantic_data_converter

from codec_server import app_from_settings, bound_server, create_app, main, server_url
from common.codec import EncryptionCodec, encryption_keys
from common.settings import InvalidSettings
from tests.certificates import LoopbackCertificates, loopback_certificates, write_key
from tests.ports import free_port
from tests.stack import SESSION_KEYS, make_settings

UI = "http://localhost:8233"
ORIGINS = [UI, "http://127.0.0.1:8233"]
TOKEN = "s3cret-token"
CODEC = EncryptionCodec({"k1": AESGCM.generate_key(bit_length=256)}, "k1")

Serve = Callable[[Starlette], Awaitable[str]]


@asynccontextmanager
async def running(server: uvicorn.Server, sock: socket.socket) -> AsyncIterator[None]:
    """``server`` serving on ``sock`` from its start-up to the end of the block."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "uvicorn stopped during startup"
                await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Runs apps under a real uvicorn server on a free loopback port; stops them afterwards."""
    async with AsyncExitStack() as servers:

        async def start(app: Starlette) -> str:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
            await servers.enter_async_context(running(server, sock))
            host, port = sock.getsockname()
            return f"http://{host}:{port}"

        yield start


@dataclass(frozen=True)
class Tls:
    """Certificates made at test time (the ``tls`` fixture), and a key that is not theirs."""

    certificates: LoopbackCertificates
    other_key_file: Path

    def settings(self) -> dict[str, Path]:
        """The codec server's TLS settings for the certificate and its key."""
        return {
            "codec_server_tls_cert_file": self.certificates.chain_file,
            "codec_server_tls_key_file": self.certificates.key_file,
        }


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    folder = tmp_path_factory.mktemp("tls")
    other_key = write_key(folder / "other.key", ec.generate_private_key(ec.SECP256R1()))
    return Tls(loopback_certificates(folder), other_key)


def plain_payloads_json() -> str:
    payloads = pydantic_data_converter.payload_converter.to_payloads(
        [{"email": "alice@example.com"}, 42]
    )
    return json_format.MessageToJson(Payloads(payloads=payloads))


def post_json(
    client: httpx.AsyncClient, path: str, body: str, **headers: str
) -> Awaitable[httpx.Response]:
    return client.post(
        path,
        content=body,
        headers={"Content-Type": "application/json", "X-Namespace": "default", **headers},
    )


async def test_encode_then_decode_round_trip(serve: Serve) -> None:
    base = await serve(create_app(CODEC, allowed_origins=ORIGINS, token=None))
    body = plain_payloads_json()
    async with httpx.AsyncClient(base_url=base) as client:
        encoded = await post_json(client, "/encode", body)
        assert encoded.status_code == 200
        assert encoded.headers["content-type"] == "application/json"
        wire = json_format.Parse(encoded.text, Payloads())
        assert [p.metadata["encoding"] for p in wire.payloads] == [b"binary/encrypted"] * 2
        assert "alice@example.com" not in encoded.text
        # What the server encoded is what a worker's codec reads, and vice versa.
        assert await CODEC.decode(wire.payloads) == list(
            json_format.Parse(body, Payloads()).payloads
        )

        for path in ("/decode", "/default/decode"):
            decoded = await post_json(client, path, encoded.text)
            assert decoded.status_code == 200
            assert json_format.Parse(decoded.text, Payloads()) == json_format.Parse(
                body, Payloads()
            )


async def test_bad_requests_get_clear_errors(serve: Serve) -> None:
    base = await serve(create_app(CODEC, allowed_origins=ORIGINS, token=None))
    stranger = EncryptionCodec({"other-key": AESGCM.generate_key(bit_length=256)}, "other-key")
    foreign = Payloads(
        payloads=await stranger.encode(
            json_format.Parse(plain_payloads_json(), Payloads()).payloads
        )
    )
    async with httpx.AsyncClient(base_url=base) as client:
        unknown_key = await post_json(client, "/decode", json_format.MessageToJson(foreign))
        assert unknown_key.status_code == 400
        assert "other-key" in unknown_key.text

        not_payloads = await post_json(client, "/decode", '{"nope": 1}')
        assert not_payloads.status_code == 400

        form = await client.post("/decode", content=plain_payloads_json())
        assert form.status_code == 415

        assert (await client.get("/decode")).status_code == 405


async def test_preflight_from_the_ui_is_allowed(serve: Serve) -> None:
    base = await serve(create_app(CODEC, allowed_origins=ORIGINS, token=TOKEN))
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.options(
            "/decode",
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
            },
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == UI
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"content-type", "x-namespace", "authorization"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_other_origins_get_no_cors_grant(serve: Serve) -> None:
    base = await serve(create_app(CODEC, allowed_origins=ORIGINS, token=None))
    evil = "http://evil.example"
    async with httpx.AsyncClient(base_url=base) as client:
        preflight = await client.options(
            "/decode",
            headers={"Origin": evil, "Access-Control-Request-Method": "POST"},
        )
        post = await post_json(client, "/decode", plain_payloads_json(), Origin=evil)
        allowed_post = await post_json(client, "/decode", plain_payloads_json(), Origin=UI)
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in post.headers
    assert allowed_post.headers["access-control-allow-origin"] == UI


async def test_preflights_from_other_origins_get_no_grant_as_configured(
    serve: Serve, tmp_path: Path
) -> None:
    """What a wildcard would grant: a page of another site, or a sandboxed frame (``null``),
    asking to call ``/decode`` with credentials."""
    base = await serve(app_from_settings(make_settings(tmp_path, codec_server_origins=[UI])))
    async with httpx.AsyncClient(base_url=base) as client:
        preflights = {
            origin: await client.options(
                "/decode", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
            )
            for origin in ("http://evil.example", "null", UI)
        }
    assert "access-control-allow-origin" not in preflights["http://evil.example"].headers
    assert "access-control-allow-origin" not in preflights["null"].headers
    assert preflights[UI].headers["access-control-allow-origin"] == UI


async def test_token_is_required_when_configured(serve: Serve) -> None:
    base = await serve(create_app(CODEC, allowed_origins=ORIGINS, token=TOKEN))
    body = plain_payloads_json()
    async with httpx.AsyncClient(base_url=base) as client:
        missing = await post_json(client, "/encode", body, Origin=UI)
        wrong = await post_json(client, "/encode", body, Authorization="Bearer not-it")
        not_bearer = await post_json(client, "/encode", body, Authorization=TOKEN)
        right = await post_json(client, "/encode", body, Authorization=f"Bearer {TOKEN}")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["access-control-allow-origin"] == UI  # so the UI can show the error
    assert wrong.status_code == 401
    assert not_bearer.status_code == 401
    assert right.status_code == 200
    assert len(json_format.Parse(right.text, Payloads()).payloads) == 2


async def test_non_ascii_tokens_are_compared_as_utf8(serve: Serve) -> None:
    """A wrong token that is not ASCII is a 401 like any wrong token, not a server error."""
    base = await serve(create_app(CODEC, allowed_origins=ORIGINS, token="sécret-tøken"))
    body = plain_payloads_json()
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        wrong = await client.post(
            "/encode", content=body, headers={b"Authorization": "Bearer nöt-it".encode()}
        )
        right = await client.post(
            "/encode", content=body, headers={b"Authorization": "Bearer sécret-tøken".encode()}
        )
    assert wrong.status_code == 401
    assert right.status_code == 200


def test_standalone_server_without_a_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No worker has generated a payload key in its data folder: a one-line error, no new key."""
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("REGISTRATION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("REGISTRATION_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("REGISTRATION_ENCRYPTION_KEY_FILE", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "REGISTRATION_ENCRYPTION_KEYS" in capsys.readouterr().err
    assert not (tmp_path / "data" / "keys").exists()


async def test_requests_for_another_host_are_refused(serve: Serve) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 reaches the
    server from the browser, but its requests name its own host."""
    base = await serve(create_app(CODEC, allowed_origins=ORIGINS, token=None))
    body = plain_payloads_json()
    async with httpx.AsyncClient(base_url=base) as client:
        rebound = await post_json(client, "/encode", body, Host="evil.example:8081")
        by_name = await post_json(client, "/encode", body, Host="localhost:8081")
        by_address = await post_json(client, "/encode", body)  # Host: 127.0.0.1:<port>
    assert rebound.status_code == 400
    assert by_name.status_code == 200
    assert by_address.status_code == 200


def test_beyond_loopback_the_server_needs_a_token(tmp_path: Path) -> None:
    """Checked where both the standalone server and ``worker.py --dev`` make the app."""
    with pytest.raises(InvalidSettings, match=r"^REGISTRATION_CODEC_SERVER_TOKEN: not set"):
        app_from_settings(make_settings(tmp_path, codec_server_host="192.0.2.1"))
    for host in ("127.0.0.1", "::1", "localhost"):
        app_from_settings(make_settings(tmp_path, codec_server_host=host))


async def test_the_configured_host_is_allowed_too(serve: Serve, tmp_path: Path, tls: Tls) -> None:
    settings = make_settings(
        tmp_path, codec_server_host="192.0.2.1", codec_server_token=TOKEN, **tls.settings()
    )
    base = await serve(app_from_settings(settings))
    body, auth = plain_payloads_json(), f"Bearer {TOKEN}"
    async with httpx.AsyncClient(base_url=base) as client:
        configured = await post_json(
            client, "/encode", body, Host="192.0.2.1:8081", Authorization=auth
        )
        other = await post_json(client, "/encode", body, Host="192.0.2.2:8081", Authorization=auth)
    assert configured.status_code == 200
    assert other.status_code == 400


def test_beyond_loopback_the_server_needs_tls(tmp_path: Path, tls: Tls) -> None:
    """Whoever is on the path would read the token and every decrypted payload. On loopback it
    stays plain HTTP, as the embedded dev UI calls it."""
    beyond = {"codec_server_host": "192.0.2.1", "codec_server_token": TOKEN}
    with pytest.raises(
        InvalidSettings,
        match=r"^REGISTRATION_CODEC_SERVER_TLS_CERT_FILE, REGISTRATION_CODEC_SERVER_TLS_KEY_FILE:"
        r" not set, and the codec server would listen on 192\.0\.2\.1 ",
    ):
        app_from_settings(make_settings(tmp_path, **beyond))
    app_from_settings(make_settings(tmp_path, **beyond, **tls.settings()))
    assert server_url(make_settings(tmp_path)) == "http://127.0.0.1:8081"


async def test_with_a_certificate_the_server_speaks_https(tmp_path: Path, tls: Tls) -> None:
    """The certificate and key reach uvicorn: a client that trusts the certificate decodes a
    payload, with the token, at the URL the server logs."""
    settings = make_settings(
        tmp_path, codec_server_port=free_port(), codec_server_token=TOKEN, **tls.settings()
    )
    url = server_url(settings)
    assert url == f"https://127.0.0.1:{settings.codec_server_port}"
    plain = json_format.Parse(plain_payloads_json(), Payloads())
    encrypted = await EncryptionCodec(*encryption_keys(settings)).encode(plain.payloads)
    trusting = ssl.create_default_context(cafile=tls.certificates.ca_file)
    async with (
        running(*bound_server(settings, embedded=True)),
        httpx.AsyncClient(base_url=url, verify=trusting) as client,
    ):
        decoded = await post_json(
            client,
            "/decode",
            json_format.MessageToJson(Payloads(payloads=encrypted)),
            Authorization=f"Bearer {TOKEN}",
        )
    assert decoded.status_code == 200
    assert json_format.Parse(decoded.text, Payloads()) == plain


def test_a_key_that_is_not_the_certificates_is_named(tmp_path: Path, tls: Tls) -> None:
    """Found before serving: inside ``worker.py --dev`` uvicorn would fail in a task of its own,
    and the UI would find no codec server."""
    settings = make_settings(
        tmp_path,
        codec_server_tls_cert_file=tls.certificates.chain_file,
        codec_server_tls_key_file=tls.other_key_file,
    )
    with pytest.raises(
        InvalidSettings,
        match=r"^REGISTRATION_CODEC_SERVER_TLS_CERT_FILE, REGISTRATION_CODEC_SERVER_TLS_KEY_FILE:"
        r" cannot serve HTTPS with them: ",
    ):
        bound_server(settings, embedded=True)


@pytest.fixture
def standalone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """``python codec_server.py``'s environment: a payload key, no ``.env``, no token, no TLS."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGISTRATION_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(
        "REGISTRATION_ENCRYPTION_KEYS", SESSION_KEYS["encryption_keys"].get_secret_value()
    )
    for name in ("TOKEN", "TLS_CERT_FILE", "TLS_KEY_FILE"):
        monkeypatch.delenv(f"REGISTRATION_CODEC_SERVER_{name}", raising=False)
    return monkeypatch


def test_standalone_server_on_a_taken_port_names_the_variable(
    standalone: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 as everywhere else for a port in use; uvicorn's own is 3 ("Temporal unreachable"
    in this project)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        standalone.setenv("REGISTRATION_CODEC_SERVER_PORT", str(port))
        with pytest.raises(SystemExit) as exit_:
            main([])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error: REGISTRATION_CODEC_SERVER_PORT: cannot listen: ")
    assert str(port) in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv", [["--host", "192.0.2.1"], []])
def test_standalone_server_beyond_loopback_without_a_token_does_not_start(
    standalone: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """One line naming all that is missing, the token and TLS."""
    standalone.setenv("REGISTRATION_CODEC_SERVER_HOST", "192.0.2.1" if not argv else "127.0.0.1")
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error: REGISTRATION_CODEC_SERVER_TOKEN: not set")
    tls = (
        "; REGISTRATION_CODEC_SERVER_TLS_CERT_FILE, REGISTRATION_CODEC_SERVER_TLS_KEY_FILE: not set"
    )
    assert tls in err and len(err.splitlines()) == 1


def test_standalone_server_refuses_a_port_out_of_range(
    standalone: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--port", "70000"])
    assert exit_.value.code == 2
    assert "argument --port: Input should be less than or equal to 65535" in capsys.readouterr().err
