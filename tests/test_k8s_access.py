"""Who may call the extender's verbs: mutual TLS and bearer tokens, reloaded from their files, and the keys that set them."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from extender import access
from extender.access import Access
from extender.config import load_config
from extender.kubeapi import Rest
from extender.main import start
from extender.server import ExtenderServer, serve_in_thread
from scheduler.catalog import default_catalog
from scheduler.errors import InputError
from tests.e2e.controlplane import local_extender
from tests.pki import Issued, authority, issue
from tests.test_k8s_server import FakeExtender

BINDING = json.dumps({"PodName": "train-0", "PodNamespace": "ml", "PodUID": "u-1", "Node": "gpu-a"}).encode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = authority(folder, "ca"), authority(folder, "rogue-ca")
    return {"ca": ca, "rogue-ca": rogue, "server": issue(folder, ca, "server"), "server-2": issue(folder, ca, "server-2"),
            "client": issue(folder, ca, "client", client=True), "client-2": issue(folder, ca, "client-2", client=True),
            "rogue-client": issue(folder, rogue, "rogue-client", client=True)}


def copy(issued: Issued, folder: Path, name: str) -> Issued:
    """`issued` written to `name`.crt/.key in `folder` the way a Secret update lands: a new file moved in place."""
    target = Issued(folder / f"{name}.crt", folder / f"{name}.key")
    for source, destination in ((issued.cert, target.cert), (issued.key, target.key)):
        shutil.copyfile(source, f"{destination}.new")
        os.replace(f"{destination}.new", destination)
    return target


def serving(server: ExtenderServer) -> Iterator[ExtenderServer]:
    stop = serve_in_thread(server)
    try:
        yield server
    finally:
        stop()


def client_context(ca: Issued, identity: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert))
    if identity is not None:
        context.load_cert_chain(str(identity.cert), str(identity.key))
    return context


def call(server: ExtenderServer, method: str, path: str, *, context: ssl.SSLContext | None = None,
         body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
    host, port = server.server_address
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection(host, port, timeout=10)
    else:
        connection = http.client.HTTPSConnection(host, port, context=context, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response
    finally:
        connection.close()


@pytest.fixture
def mutual(pki: dict[str, Issued], tmp_path: Path) -> Iterator[tuple[ExtenderServer, FakeExtender]]:
    extender = FakeExtender()
    tls = access.server_tls(str(pki["server"].cert), str(pki["server"].key), str(pki["ca"].cert))
    server = ExtenderServer(("127.0.0.1", 0), extender, prefix="/extender", tls=tls, access=Access(client_ca=True))
    for running in serving(server):
        yield running, extender


def test_with_mutual_tls_only_a_client_certificate_signed_by_the_ca_binds(
    mutual: tuple[ExtenderServer, FakeExtender], pki: dict[str, Issued]
) -> None:
    server, extender = mutual
    status, body, response = call(server, "POST", "/extender/bind", body=BINDING, context=client_context(pki["ca"]))
    assert status == 401 and b"client certificate signed by client_ca" in body
    assert response.getheader("Connection") == "close" and extender.calls == []
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        call(server, "POST", "/extender/bind", body=BINDING, context=client_context(pki["ca"], pki["rogue-client"]))
    assert extender.calls == []
    status, body, _ = call(server, "POST", "/extender/bind", body=BINDING, context=client_context(pki["ca"], pki["client"]))
    assert (status, json.loads(body)) == (200, {"Error": ""})
    assert [verb for verb, _ in extender.calls] == ["bind"]
    assert call(server, "GET", "/healthz", context=client_context(pki["ca"]))[:2] == (200, b"ok\n")  # probes need none


def test_plain_http_to_a_tls_server_is_not_answered(mutual: tuple[ExtenderServer, FakeExtender]) -> None:
    server, extender = mutual
    try:
        status = call(server, "POST", "/extender/bind", body=BINDING)[0]
    except (http.client.HTTPException, OSError):
        status = 0
    assert status != 200 and extender.calls == []


def test_a_silent_connection_does_not_hold_up_tls_handshakes(
    mutual: tuple[ExtenderServer, FakeExtender], pki: dict[str, Issued]
) -> None:
    server, _ = mutual
    with socket.create_connection(server.server_address):  # connects, never says a word
        status, _, _ = call(server, "POST", "/extender/bind", body=BINDING, context=client_context(pki["ca"], pki["client"]))
    assert status == 200


def test_rotated_certificate_files_are_served_to_the_next_connection(pki: dict[str, Issued], tmp_path: Path) -> None:
    live = copy(pki["server"], tmp_path, "live")
    tls = access.server_tls(str(live.cert), str(live.key))
    server = ExtenderServer(("127.0.0.1", 0), FakeExtender(), prefix="/extender", tls=tls)

    def served_certificate() -> bytes:
        with socket.create_connection(server.server_address, timeout=10) as raw, \
                client_context(pki["ca"]).wrap_socket(raw, server_hostname="127.0.0.1") as secure:
            certificate = secure.getpeercert(binary_form=True)
            assert certificate is not None
            return certificate

    for _ in serving(server):
        assert served_certificate() == pki["server"].der()
        copy(pki["server-2"], tmp_path, "live")
        assert served_certificate() == pki["server-2"].der()
        live.cert.write_text("-----BEGIN CERTIFICATE-----\nhalf written", encoding="utf-8")  # caught mid-rotation
        assert served_certificate() == pki["server-2"].der()  # the last good one goes on


def test_a_rotated_client_ca_is_trusted_from_the_next_connection(pki: dict[str, Issued], tmp_path: Path) -> None:
    trusted = copy(pki["ca"], tmp_path, "client-ca")
    tls = access.server_tls(str(pki["server"].cert), str(pki["server"].key), str(trusted.cert))
    extender = FakeExtender()
    server = ExtenderServer(("127.0.0.1", 0), extender, prefix="/extender", tls=tls, access=Access(client_ca=True))
    rogue = client_context(pki["ca"], pki["rogue-client"])
    for _ in serving(server):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            call(server, "POST", "/extender/bind", body=BINDING, context=rogue)
        copy(pki["rogue-ca"], tmp_path, "client-ca")
        assert call(server, "POST", "/extender/bind", body=BINDING, context=rogue)[0] == 200
    assert len(extender.calls) == 1


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[tuple[ExtenderServer, FakeExtender, Path]]:
    path = tmp_path / "token"
    path.write_text("s3cret-token\n", encoding="utf-8")
    extender = FakeExtender()
    server = ExtenderServer(("127.0.0.1", 0), extender, prefix="/extender", access=Access(token=access.token_file(str(path))))
    for running in serving(server):
        yield running, extender, path


TOKENS: dict[str, tuple[dict[str, str], int]] = {
    "none": ({}, 401),
    "basic": ({"Authorization": "Basic czNjcmV0"}, 401),
    "empty-bearer": ({"Authorization": "Bearer "}, 401),
    "wrong": ({"Authorization": "Bearer s3cret-tokem"}, 403),
    "prefix": ({"Authorization": "Bearer s3cret"}, 403),
    "right": ({"Authorization": "Bearer s3cret-token"}, 200),
    "right-lower-scheme": ({"Authorization": "bearer s3cret-token"}, 200),
}


@pytest.mark.parametrize(("headers", "status"), list(TOKENS.values()), ids=list(TOKENS))
def test_a_bearer_token_is_required_for_the_verbs(
    token_server: tuple[ExtenderServer, FakeExtender, Path], headers: dict[str, str], status: int
) -> None:
    server, extender, _ = token_server
    got, body, response = call(server, "POST", "/extender/bind", body=BINDING, headers=headers)
    assert got == status
    assert len(extender.calls) == (1 if status == 200 else 0)
    if status == 401:
        assert response.getheader("WWW-Authenticate") == "Bearer"
    if status != 200:
        assert json.loads(body)["Error"].startswith("Authorization: ")
    assert call(server, "GET", "/readyz")[0] == 200


def test_a_new_token_replaces_the_old_one_when_its_file_changes(
    token_server: tuple[ExtenderServer, FakeExtender, Path]
) -> None:
    server, _, path = token_server
    assert call(server, "POST", "/extender/bind", body=BINDING, headers={"Authorization": "Bearer s3cret-token"})[0] == 200
    path.write_text("rotated-token-with-another-length", encoding="utf-8")
    assert call(server, "POST", "/extender/bind", body=BINDING, headers={"Authorization": "Bearer s3cret-token"})[0] == 403
    assert call(server, "POST", "/extender/bind", body=BINDING,
                headers={"Authorization": "Bearer rotated-token-with-another-length"})[0] == 200  # fmt: skip


def test_either_credential_lets_a_caller_in_when_both_are_configured(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("t", encoding="utf-8")
    both = Access(client_ca=True, token=access.token_file(str(path)))
    assert both.check(frozenset({"client"}), None) is None and both.check(None, "Bearer t") is None
    refusal = both.check(None, None)
    assert refusal is not None and refusal.status == 401 and "client certificate" in refusal.message
    wrong = both.check(None, "Bearer u")
    assert wrong is not None and wrong.status == 403
    assert Access().check(None, None) is None  # nothing configured: loopback, anyone local


def test_with_client_name_only_that_certificate_of_the_ca_may_call(pki: dict[str, Issued]) -> None:
    named = Access(client_ca=True, client_name="kube-scheduler")
    assert named.check(frozenset({"kube-scheduler"}), None) is None
    other = named.check(frozenset({"system:node:gpu-1"}), None)  # a kubelet's certificate from a shared CA
    assert other is not None and other.status == 403 and "'kube-scheduler'" in other.message
    extender = FakeExtender()
    tls = access.server_tls(str(pki["server"].cert), str(pki["server"].key), str(pki["ca"].cert))
    server = ExtenderServer(("127.0.0.1", 0), extender, prefix="/extender", tls=tls,
                            access=Access(client_ca=True, client_name="client"))
    for running in serving(server):
        status, body, _ = call(running, "POST", "/extender/bind", body=BINDING,
                               context=client_context(pki["ca"], pki["client-2"]))
        assert status == 403 and b"client-2 is not 'client'" in body and extender.calls == []
        status, _, _ = call(running, "POST", "/extender/bind", body=BINDING, context=client_context(pki["ca"], pki["client"]))
        assert status == 200 and [verb for verb, _ in extender.calls] == ["bind"]
    assert access.certificate_names({"subject": ((("commonName", "a"),),), "subjectAltName": (("DNS", "b"), ("IP", "c"))}) \
        == frozenset({"a", "b"})
    assert access.certificate_names({}) is None


def test_credentials_that_do_not_load_stop_the_start(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read token file"):
        access.token_file(str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="the token file is empty"):
        access.token_file(str(tmp_path / "empty"))
    (tmp_path / "bad.crt").write_text("not a certificate", encoding="utf-8")
    with pytest.raises(InputError, match="cannot read TLS certificate"):
        access.server_tls(str(tmp_path / "bad.crt"), str(tmp_path / "bad.crt"))


# --- the configuration keys -----------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extender.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_server_keys_default_to_loopback_and_the_agreed_limits(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), default_catalog())
    assert (config.address, config.port, config.health_address, config.health_port) == ("127.0.0.1", 8888, "0.0.0.0", 8889)
    assert (config.client_ca, config.token_file) == ("", "")
    assert (config.workers, config.read_timeout_s, config.idle_timeout_s) == (16, 5.0, 30.0)
    assert (config.max_body_bytes, config.backlog) == (1048576, 128)
    config = load_config(write(tmp_path, 'address = "0.0.0.0"\ntoken_file = "/run/token"\nworkers = 4\n'
                                         'tls_cert = "tls.crt"\ntls_key = "tls.key"\n'
                                         "health_port = 0\nread_timeout_s = 2\n"), default_catalog())  # fmt: skip
    assert (config.address, config.token_file, config.workers, config.health_port) == ("0.0.0.0", "/run/token", 4, 0)
    assert config.read_timeout_s == 2.0


BAD: dict[str, tuple[str, str]] = {
    "off-loopback-open": ('address = "0.0.0.0"\n', "extender.toml:1: address: serving the verbs on '0.0.0.0', off "
                                                   "loopback, lets anyone who reaches it bind pods"),
    "client-ca-without-tls": ('client_ca = "ca.pem"\n', "extender.toml:1: client_ca: mutual TLS needs the server's own"),
    "health-on-the-verbs-port": ("port = 9000\nhealth_port = 9000\n", "health_port: 9000 is the verbs' port"),
    "workers": ("workers = 0\n", "extender.toml:1: workers: must be a whole number 1..1024, got 0"),
    "backlog": ('backlog = "many"\n', "backlog: must be a whole number 1..65535"),
    "body-too-big": ("max_body_bytes = 99999999999\n", "max_body_bytes: must be a whole number 1024..16777216"),
    "health-port": ("health_port = -1\n", "health_port: must be a whole number 0..65535"),
    "read-timeout": ("read_timeout_s = 0\n", "read_timeout_s: must be a number of seconds above 0"),
    "idle-timeout": ("idle_timeout_s = true\n", "idle_timeout_s: must be a number of seconds above 0"),
    "token-file": ("token_file = 3\n", "token_file: must be a string, got 3"),
    "token-in-clear": ('address = "0.0.0.0"\ntoken_file = "/run/token"\n',
                       "extender.toml:2: token_file: a bearer token off loopback would cross the network in clear"),
    "client-name-without-ca": ('client_name = "kube-scheduler"\n', "extender.toml:1: client_name: names whose client"),
}


@pytest.mark.parametrize(("text", "message"), list(BAD.values()), ids=list(BAD))
def test_bad_server_keys_name_the_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        load_config(write(tmp_path, text), default_catalog())
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_starting_off_loopback_without_credentials_is_refused_before_anything_runs() -> None:
    with pytest.raises(InputError, match=r"address: serving the verbs on '192\.0\.2\.7', off loopback"):
        start(replace(local_extender(), address="192.0.2.7"), Rest("http://127.0.0.1:9", verify=False))


def test_start_serves_the_health_listener_and_guards_the_verbs(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("tok", encoding="utf-8")
    config = replace(local_extender(), token_file=str(path), health_address="127.0.0.1", health_port=free_port())
    server, stop = start(config, Rest("http://127.0.0.1:9", verify=False))  # no API server: serving, not ready
    try:
        assert server.health_address == ("127.0.0.1", config.health_port)
        connection = http.client.HTTPConnection("127.0.0.1", config.health_port, timeout=10)
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b"ok\n"
        connection.close()
        status, _, _ = call(server, "POST", "/extender/bind", body=BINDING)
        assert status == 401
    finally:
        stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])




def test_the_command_stops_with_one_line_when_the_token_file_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleetsched.cli import main

    config = write(tmp_path, f'token_file = "{tmp_path / "gone"}"\nhealth_port = 0\n')
    assert main(["extender", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"fleetsched: {config}:1: token_file: cannot read token file") and error.count("\n") == 1
