"""`fleetsched agent`: an address or port it cannot listen on is one line naming `--listen` or `--port`
(never a traceback), `--check` finds each option that would fail at start, and every agent flag
the README and docs/agent.md name is one the parser has."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from extender.agent.main import AgentSettings, run_agent
from fleetsched.cli import _parser
from scheduler.errors import InputError
from scheduler.idleness import IdleRule
from tests.fake_nvml import FakeGpu, FakeNvml
from tests.test_agent import H100
from tests.test_agent_cli import check

ROOT = Path(__file__).resolve().parent.parent
UNRESOLVABLE = "notanaddress.invalid"  # RFC 6761: a name under .invalid never resolves
NOT_HERE = "192.0.2.1"  # TEST-NET-1 (RFC 5737): an address no machine of ours has


def listen_refusal(tmp_path: Path, address: str, port: int) -> tuple[str, FakeNvml]:
    """The one line the agent stops with when it cannot listen, and its NVML (to see it let go)."""
    nvml = FakeNvml([FakeGpu(H100, utilisation=((0.0, 42, 7),))])
    settings = AgentSettings(node="node-a", address=address, port=port, socket_path=str(tmp_path / "k.sock"),
                             period_s=0.05, rule=IdleRule(period_s=0.05, max_gap_s=0.15))  # fmt: skip
    stop = threading.Event()
    stop.set()  # were the server to start, the loop would end at once
    with pytest.raises(InputError) as raised:
        run_agent(settings, stop, nvml=nvml)
    return str(raised.value), nvml


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another server (another agent) already listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def test_an_address_that_does_not_resolve_is_one_line_naming_listen(tmp_path: Path) -> None:
    message, nvml = listen_refusal(tmp_path, UNRESOLVABLE, 19403)
    assert message.startswith(f"--listen: cannot resolve '{UNRESOLVABLE}'") and "\n" not in message
    assert nvml.initialised is False  # NVML let go before saying why


def test_a_port_another_agent_holds_is_one_line_naming_port(tmp_path: Path, taken_port: int) -> None:
    message, nvml = listen_refusal(tmp_path, "127.0.0.1", taken_port)
    assert message == f"--port: port {taken_port} on 127.0.0.1 is in use (another agent?)"
    assert nvml.initialised is False


def test_an_address_of_another_machine_is_one_line_naming_listen(tmp_path: Path) -> None:
    message, _ = listen_refusal(tmp_path, NOT_HERE, 19403)
    assert message == f"--listen: {NOT_HERE} is not an address of this machine"


@pytest.mark.parametrize(("options", "line"), [
    (["--listen", UNRESOLVABLE], f"fleetsched: --listen: cannot resolve '{UNRESOLVABLE}'"),
    (["--idle-threshold-percent", "150"],
     "fleetsched: --idle-threshold-percent: must be a percentage from 0 to 100, got 150.0"),
    (["--port", "0"], "fleetsched: --port: must be a port number from 1 to 65535, got 0"),
])  # fmt: skip
def test_check_refuses_an_option_that_would_fail_at_start(
    capsys: pytest.CaptureFixture[str], options: list[str], line: str
) -> None:
    code, out, err = check(capsys, *options)
    assert (code, out) == (2, "") and err.startswith(line) and "\n" not in err


def test_check_refuses_a_kubeconfig_it_cannot_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nonexist"
    code, out, err = check(capsys, "--team-label", "x", "--kubeconfig", str(missing))
    line = f"fleetsched: {missing}: --kubeconfig: cannot read it: No such file or directory"
    assert (code, out, err) == (2, "", line)


def test_check_refuses_a_record_in_a_missing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    record = tmp_path / "nonexistdir" / "rec.jsonl"
    code, out, err = check(capsys, "--record", str(record))
    assert (code, out, err) == (2, "", f"fleetsched: {record}: --record: its folder {record.parent} does not exist")


def test_check_refuses_a_record_that_is_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = check(capsys, "--record", str(tmp_path))
    assert (code, out, err) == (2, "", f"fleetsched: {tmp_path}: --record: is a directory; name a file in it")


def agent_options() -> set[str]:
    verbs = next(action for action in _parser()._actions if action.dest == "verb")
    parser = verbs.choices["agent"]  # type: ignore[union-attr]
    return {option for action in parser._actions for option in action.option_strings}


def readme_agent_flags() -> set[str]:
    """The flags of each `fleetsched agent ...` command line in README.md (to its closing backtick)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"fleetsched agent\b([^`]*)", text)
    return {flag for command in commands for flag in re.findall(r"--[a-z][a-z0-9-]*", command)}


def agent_doc_flags() -> set[str]:
    """Every flag docs/agent.md names, but those of the other programs it quotes (nvidia-smi)."""
    text = (ROOT / "docs" / "agent.md").read_text(encoding="utf-8")
    return set(re.findall(r"(?<!nvidia-smi )--[a-z][a-z0-9-]*", text))


def test_every_agent_flag_the_readme_and_docs_name_is_one_the_parser_has() -> None:
    readme, docs = readme_agent_flags(), agent_doc_flags()
    assert {"--node-name", "--idle-threshold-percent", "--idle-window-s"} <= readme  # the parse finds the command
    assert readme - agent_options() == set()
    assert docs - agent_options() == set()
