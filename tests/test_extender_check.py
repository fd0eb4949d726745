"""`fleetsched extender` (and `--check`) loading what its configuration names; `fleetsched approve`'s arguments.

Every file the configuration names (kubeconfig, TLS files, token, profile, governance) is
loaded by the check as a start loads it, and a mistake in one is one line at the key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import policies
from extender.config import load_config
from fleetsched.cli import main
from scheduler.catalog import default_catalog
from scheduler.enforcement import GUARDRAIL_PLUGINS, SIMULATED, plugin_names, unenforced

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "http://127.0.0.1:9"}
users:
- name: u
  user: {token: abc}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
"""
# Ports nothing else in the tests takes; a start stopped by a mistake never listens on them.
PORTS = "port = 18888\nhealth_port = 0\n"


def configuration(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ext.toml"
    path.write_text(text, encoding="utf-8")
    return path


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


# -- the kubeconfig -------------------------------------------------------------------------------


@pytest.mark.parametrize("check", [False, True], ids=["start", "check"])
def test_a_missing_kubeconfig_is_one_line_at_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     check: bool) -> None:  # fmt: skip
    path = configuration(tmp_path, f'{PORTS}kubeconfig = "/nonexist/kc"\n')
    assert main(["extender", "--config", str(path), *(["--check"] if check else [])]) == 2
    err = one_line(capsys)
    assert err == (f"fleetsched: {path}:3: kubeconfig: /nonexist/kc: cannot load the kubeconfig: "
                   "No such file or directory\n")


@pytest.mark.parametrize("check", [False, True], ids=["start", "check"])
def test_a_kubeconfig_that_is_not_yaml_is_one_line_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 check: bool) -> None:  # fmt: skip
    (tmp_path / "badkc").write_text("garbage: [\n", encoding="utf-8")
    path = configuration(tmp_path, f'{PORTS}kubeconfig = "{tmp_path / "badkc"}"\n')
    assert main(["extender", "--config", str(path), *(["--check"] if check else [])]) == 2
    err = one_line(capsys)
    assert err.startswith(f"fleetsched: {path}:3: kubeconfig: {tmp_path / 'badkc'}:2: cannot load the kubeconfig: "
                          "not valid YAML: ")


def test_a_start_without_kubeconfig_outside_a_cluster_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              outside_a_cluster: None) -> None:  # fmt: skip
    path = configuration(tmp_path, PORTS)
    assert main(["extender", "--config", str(path)]) == 2
    assert one_line(capsys) == (f"fleetsched: {path}: kubeconfig: no kubeconfig given, and not running in a cluster "
                                "(KUBERNETES_SERVICE_HOST is not set)\n")


def test_the_check_without_kubeconfig_outside_a_cluster_warns_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, outside_a_cluster: None
) -> None:
    """The shipped configuration uses the pod's service account: checked on a laptop it is
    fine, but the check says that it starts only in a pod."""
    path = configuration(tmp_path, PORTS)
    with caplog.at_level(logging.WARNING):
        assert main(["extender", "--config", str(path), "--check"]) == 0
    assert "ok (0 pools" in capsys.readouterr().out
    assert any("no kubeconfig given, and not running in a cluster" in record.getMessage() for record in caplog.records)


def test_the_check_in_a_cluster_loads_the_service_account(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    path = configuration(tmp_path, PORTS)
    assert main(["extender", "--config", str(path), "--check"]) == 2
    assert one_line(capsys).startswith(f"fleetsched: {path}: kubeconfig: cannot load the in-cluster configuration: ")


# -- TLS files and the token, loaded by the check as by a start -----------------------------------


@pytest.mark.parametrize(("text", "line", "message"), [
    ('tls_cert = "{d}/none.pem"\ntls_key = "{d}/key.pem"\n', 3, "tls_cert: cannot read {d}/none.pem: No such file"),
    ('tls_cert = "{d}/junk.pem"\ntls_key = "{d}/none.pem"\n', 4, "tls_key: cannot read {d}/none.pem: No such file"),
    ('tls_cert = "{d}/junk.pem"\ntls_key = "{d}/junk.pem"\n', 3, "tls_cert: cannot read TLS certificate"),
    ('tls_cert = "{d}/junk.pem"\ntls_key = "{d}/junk.pem"\nclient_ca = "{d}/none.pem"\n', 5,
     "client_ca: cannot read {d}/none.pem: No such file"),
    ('token_file = "{d}/none"\n', 3, "token_file: cannot read token file ({d}/none)"),
], ids=["cert-missing", "key-missing", "cert-garbage", "client-ca-missing", "token-missing"])
def test_the_check_loads_tls_files_and_the_token_as_a_start_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, message: str
) -> None:
    (tmp_path / "junk.pem").write_text("garbage\n", encoding="utf-8")
    (tmp_path / "key.pem").write_text("garbage\n", encoding="utf-8")
    (tmp_path / "kc").write_text(KUBECONFIG, encoding="utf-8")
    path = configuration(tmp_path, PORTS + text.format(d=tmp_path) + f'kubeconfig = "{tmp_path / "kc"}"\n')
    assert main(["extender", "--config", str(path), "--check"]) == 2
    assert one_line(capsys).startswith(f"fleetsched: {path}:{line}: {message.format(d=tmp_path)}")


# -- the profile: read from the configuration's folder, its mistakes at the key ------------------


def test_a_profile_path_is_read_from_the_configurations_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "myprof.toml").write_text('sort = "PriorityThenAge"\nplacer = "greedy"\n', encoding="utf-8")
    path = tmp_path / "sub" / "ext.toml"
    path.write_text('profile = "myprof.toml"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # elsewhere than the configuration
    assert load_config(path, default_catalog()).profile == str(tmp_path / "sub" / "myprof.toml")
    assert main(["extender", "--config", str(path), "--check"]) == 0
    assert f"profile {tmp_path / 'sub' / 'myprof.toml'}" in capsys.readouterr().out


def test_a_bundled_profile_name_stays_a_name(tmp_path: Path) -> None:
    assert load_config(configuration(tmp_path, 'profile = "binpack"\n'), default_catalog()).profile == "binpack"


def test_a_profile_not_bundled_is_named_at_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = configuration(tmp_path, 'scheduler_name = "x"\nprofile = "nosuch"\n')
    assert main(["extender", "--config", str(path), "--check"]) == 2
    assert one_line(capsys).startswith(f"fleetsched: {path}:2: profile: no bundled profile 'nosuch'; bundled: ")


def test_a_mistake_in_a_profile_file_names_the_key_and_the_profiles_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.toml").write_text('placer = "greedy"\nsort = "Nope"\n', encoding="utf-8")
    path = configuration(tmp_path, 'profile = "p.toml"\n')
    assert main(["extender", "--config", str(path), "--check"]) == 2
    assert one_line(capsys).startswith(f"fleetsched: {path}:1: profile: {tmp_path / 'p.toml'}:2: sort: unknown plugin")


def test_a_missing_governance_file_is_named_at_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = configuration(tmp_path, 'port = 8000\ngovernance = "nowhere.toml"\n')
    assert main(["extender", "--config", str(path), "--check"]) == 2
    assert one_line(capsys).startswith(f"fleetsched: {path}:2: governance: {tmp_path / 'nowhere.toml'}: ")


# -- a governance file under a profile without guardrails ----------------------------------------

APPROVAL = '[[approval]]\nname = "big"\nabove_gpus = 4\n'


def test_only_the_governed_profile_enforces_a_governance_file() -> None:
    assert set(GUARDRAIL_PLUGINS) <= plugin_names(policies.profile("governed"))
    assert unenforced(policies.profile("governed"), "g.toml", SIMULATED) == ""
    warning = unenforced(policies.profile("cost-cpsat"), "g.toml", SIMULATED)
    assert warning.startswith("profile cost-cpsat has no guardrail plugin (ApprovalGate, QuotaLimit, BudgetGuard, ")
    assert "g.toml are only reported (summary.json, its governance section), not enforced" in warning
    assert warning.endswith("profile governed enforces them")


def test_the_check_warns_that_a_profile_without_guardrails_only_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "g.toml").write_text(APPROVAL, encoding="utf-8")
    (tmp_path / "kc").write_text(KUBECONFIG, encoding="utf-8")
    path = configuration(tmp_path, f'governance = "g.toml"\nkubeconfig = "{tmp_path / "kc"}"\n')
    with caplog.at_level(logging.WARNING):
        assert main(["extender", "--config", str(path), "--check"]) == 0
    warnings = [record.getMessage() for record in caplog.records if "guardrail" in record.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("profile cost-cpsat has no guardrail plugin")
    assert "only reported (spend on /metrics and in the spend book), not enforced" in warnings[0]
    caplog.clear()
    governed = configuration(tmp_path, f'governance = "g.toml"\nprofile = "governed"\nkubeconfig = "{tmp_path / "kc"}"\n')
    with caplog.at_level(logging.WARNING):
        assert main(["extender", "--config", str(governed), "--check"]) == 0
    assert not [record for record in caplog.records if "guardrail" in record.getMessage()]


CLUSTER = '[[pool]]\nname = "a"\ngpu = "A100-80GB"\ngpus_per_node = 8\nusd_per_node_hour = 10\nnodes = 1\n'


@pytest.mark.parametrize("verb", ["plan", "simulate", "compare"])
def test_plan_simulate_and_compare_warn_of_a_profile_without_guardrails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, verb: str
) -> None:
    (tmp_path / "g.toml").write_text(APPROVAL, encoding="utf-8")
    (tmp_path / "c.toml").write_text(CLUSTER, encoding="utf-8")
    (tmp_path / "j.jsonl").write_text('{"id": "a", "duration_s": 10, "gpus": 1}\n', encoding="utf-8")
    common = ["--cluster", str(tmp_path / "c.toml"), "--governance", str(tmp_path / "g.toml")]
    argv = {"plan": ["plan", "--jobs", str(tmp_path / "j.jsonl"), "--profile", "binpack"],
            "simulate": ["simulate", "--trace", str(tmp_path / "j.jsonl"), "--profile", "binpack",
                         "--out", str(tmp_path / "run")],
            "compare": ["compare", "--trace", str(tmp_path / "j.jsonl"), "--profiles", "governed,binpack",
                        "--seeds", "1", "--workers", "1", "--out", str(tmp_path / "cmp")]}[verb]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert main([*argv, *common]) == 0
    warnings = [record.getMessage() for record in caplog.records if "guardrail" in record.getMessage()]
    fate = "not applied to the plan" if verb == "plan" else SIMULATED
    assert warnings == [unenforced(policies.profile("binpack"), str(tmp_path / "g.toml"), fate)]


# -- approve: names first, each argument named, an answer that is not JSON ----------------------


def test_approve_checks_names_before_the_kubeconfig(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["approve", "Bad_Name!", "--kubeconfig", "/nonexist/kc"]) == 2
    assert one_line(capsys).startswith("fleetsched: POD|GANG: 'Bad_Name!' is not a name")


@pytest.mark.parametrize(("flag", "value"), [("--namespace", ""), ("--namespace", "NS/../x"),
                                             ("--extender-namespace", "")])
def test_approve_names_a_bad_namespace_flag(capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    assert main(["approve", "mypod", flag, value, "--kubeconfig", "/nonexist/kc"]) == 2
    assert one_line(capsys).startswith(f"fleetsched: {flag}: {value!r} is not a namespace")


@pytest.fixture
def html_api_server() -> Iterator[str]:
    """An 'API server' that answers every request 201 with an HTML page (a proxy's, say)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"<html>hi</html>"
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *arguments: object) -> None:
            del arguments

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_approve_with_an_answer_that_is_not_json_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             html_api_server: str) -> None:  # fmt: skip
    (tmp_path / "kc").write_text(KUBECONFIG.replace("http://127.0.0.1:9", html_api_server), encoding="utf-8")
    assert main(["approve", "mypod", "--kubeconfig", str(tmp_path / "kc")]) == 2
    assert one_line(capsys).startswith("fleetsched: the API server's answer is not JSON (")
