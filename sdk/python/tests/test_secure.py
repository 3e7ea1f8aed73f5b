"""HTTPS with a private CA, and tokens: a server of its own for this module."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from taskwarden import AsyncClient, Client, Context, Taskwarden, TransportError, Unauthorized
from taskwarden.testing import ServerProcess
from tests.conftest import running_worker

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

secure_app = Taskwarden()


@secure_app.task(queue="t-secure")
async def shout(ctx: Context, text: str) -> str:
    return text.upper()


def make_certificates(dir: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: (ca.pem, cert.pem, key.pem)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=dir, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    )
    (dir / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "cert.pem",
    )
    return dir / "ca.pem", dir / "cert.pem", dir / "key.pem"


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    ca, cert, key = make_certificates(tmp_path_factory.mktemp("tls"))
    server = ServerProcess.start(
        "--tls-cert", str(cert), "--tls-key", str(key), scheme="https", ca_cert=str(ca)
    )
    try:
        yield server, ca
    finally:
        server.stop()


@pytest.fixture
async def tokens(secure_server: tuple[ServerProcess, Path]) -> AsyncIterator[dict[str, str]]:
    server, ca = secure_server
    async with AsyncClient(server.url, ca_cert=str(ca), token="") as bootstrap:
        made = {}
        # The first token is made while none exists; from then on every call needs one.
        admin = await bootstrap.raw("POST", "/v1/tokens", {"name": "py-admin", "role": "admin"})
        made["admin"] = admin["token"]
    async with AsyncClient(server.url, ca_cert=str(ca), token=made["admin"]) as admin_client:
        for role in ("submit", "worker"):
            created = await admin_client.raw(
                "POST", "/v1/tokens", {"name": f"py-{role}", "role": role}
            )
            made[role] = created["token"]
    yield made


async def test_https_with_a_private_ca_and_tokens(
    secure_server: tuple[ServerProcess, Path], tokens: dict[str, str]
) -> None:
    server, ca = secure_server
    async with AsyncClient(server.url, token=tokens["submit"]) as untrusting:
        with pytest.raises(TransportError):
            await untrusting.kinds()  # the private CA is not trusted
    async with AsyncClient(server.url, ca_cert=str(ca), token="") as anonymous:
        with pytest.raises(Unauthorized) as e:
            await anonymous.kinds()
        assert e.value.status == 401
    # A worker with a worker token, a client with a submit token.
    secure_app.configure(server.url, ca_cert=str(ca), token=tokens["worker"])
    submitter = Taskwarden(server.url, ca_cert=str(ca), token=tokens["submit"])
    try:
        async with running_worker(["t-secure"], on=secure_app):
            ref = await submitter.client.submit("shout", {"text": "hi"}, queue="t-secure")
            done = await submitter.client.wait(ref.id, timeout=10)
            assert (done.state, done.result) == ("succeeded", "HI")
        with Client(server.url, ca_cert=str(ca), token=tokens["submit"]) as blocking:
            assert blocking.get(ref.id).result == "HI"
    finally:
        await submitter.aclose()
        await secure_app.aclose()
