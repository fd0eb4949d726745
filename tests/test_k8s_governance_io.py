"""The guardrails' inputs and outputs: the governance key and flag, `fleetsched approve`, Approval objects, the stored book."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from extender.config import load_config
from extender.governance_api import (
    SPEND_CONFIGMAP,
    GovernanceStore,
    approval_object,
    read_approval,
    read_spend_state,
    spend_state,
)
from extender.kubeapi import ApiError
from fleetsched.approve import approve
from fleetsched.cli import main
from scheduler.catalog import default_catalog
from scheduler.errors import FleetschedError, InputError

CATALOG = default_catalog()
GOOD = '[[queue]]\nname = "ml"\n[[budget]]\nteam = "ml"\nusd = 100\n'


class FakeRest:
    """Answers requests from a table of (method, path) -> answer or ApiError, and records them."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                timeout_s: float = 30.0) -> Any:  # fmt: skip
        self.sent.append((method, path, body))
        answer = self.answers.get((method, path))
        if isinstance(answer, list):  # one answer per call, in turn
            answer = answer.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_governance_key_is_read_from_the_configurations_folder(tmp_path: Path) -> None:
    (tmp_path / "extender.toml").write_text('governance = "gov.toml"\n', encoding="utf-8")
    assert load_config(tmp_path / "extender.toml", CATALOG).governance == str(tmp_path / "gov.toml")
    (tmp_path / "plain.toml").write_text("", encoding="utf-8")
    assert load_config(tmp_path / "plain.toml", CATALOG).governance == ""
    (tmp_path / "bad.toml").write_text("governance = 3\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.toml:1: governance: must be a string, got 3"):
        load_config(tmp_path / "bad.toml", CATALOG)


def test_the_command_checks_a_governance_file_from_the_key_or_the_flag(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "gov.toml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "extender.toml").write_text('governance = "gov.toml"\nprofile = "governed"\n', encoding="utf-8")
    assert main(["extender", "--config", str(tmp_path / "extender.toml"), "--check"]) == 0
    assert f"governance {tmp_path / 'gov.toml'} (1 budgets)" in capsys.readouterr().out
    (tmp_path / "plain.toml").write_text("", encoding="utf-8")
    assert main(["extender", "--config", str(tmp_path / "plain.toml"), "--governance", str(tmp_path / "gov.toml"),
                 "--check"]) == 0  # fmt: skip
    assert "(1 budgets)" in capsys.readouterr().out


def test_a_governance_file_with_a_typo_stops_the_extender_with_one_line(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "gov.toml").write_text(GOOD + "acton = \"deny\"\n", encoding="utf-8")
    (tmp_path / "plain.toml").write_text("", encoding="utf-8")
    code = main(["extender", "--config", str(tmp_path / "plain.toml"), "--governance", str(tmp_path / "gov.toml")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"fleetsched: {tmp_path / 'gov.toml'}:6: ") and "acton" in err


def test_a_missing_governance_file_stops_the_check_with_one_line(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "extender.toml").write_text('governance = "nowhere.toml"\n', encoding="utf-8")
    assert main(["extender", "--config", str(tmp_path / "extender.toml"), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere.toml" in err


def test_an_approval_names_its_pod_or_gang_and_one_without_a_clear_decision_is_ignored() -> None:
    made = approval_object("fleetsched", "ml/train-1", False, True, "eval run", "alice")
    assert made["metadata"] == {"name": "pod.ml.train-1", "namespace": "fleetsched"}
    assert made["spec"] == {"pod": "ml/train-1", "decision": "approve", "reason": "eval run", "approver": "alice"}
    read = read_approval(made)
    assert read is not None and (read.job_id, read.approved, read.approver) == ("ml/train-1", True, "alice")
    assert approval_object("fleetsched", "ml/a", False, True, "", "")["spec"] == {"pod": "ml/a", "decision": "approve"}
    gang = read_approval(approval_object("fleetsched", "ml/llama", True, False, "", "bob"))
    assert gang is not None and (gang.name, gang.job_id, gang.approved) == ("gang.ml.llama", "ml/gang:llama", False)
    for spec in ({"pod": "ml/a", "gang": "ml/b", "decision": "approve"}, {"pod": "ml/a", "decision": "yes"},
                 {"decision": "approve"}, {"pod": "a", "decision": "approve"}):
        assert read_approval({"metadata": {"name": "odd"}, "spec": spec}) is None, spec
    with pytest.raises(ValueError, match="not NAMESPACE/NAME"):
        approval_object("fleetsched", "ml/Train_1", False, True, "", "")


APPROVALS = "/apis/fleetsched.io/v1alpha1/namespaces/fleetsched/approvals"


def test_approve_writes_one_approval_and_says_so() -> None:
    rest = FakeRest({("POST", APPROVALS): {}})
    line = approve(rest, "fleetsched", "ml/big", gang=False, approved=True, reason="ok", approver="alice")
    assert line == "approved pod ml/big (approval fleetsched/pod.ml.big)"
    (sent,) = rest.sent
    assert sent[2]["spec"] == {"pod": "ml/big", "decision": "approve", "reason": "ok", "approver": "alice"}


@pytest.mark.parametrize(("error", "message"), [
    (ApiError(409, "exists"), "approval fleetsched/pod.ml.big exists already (rejected by bob): a decision stands"),
    (ApiError(404, "not found"), "the API server has no approvals.fleetsched.io in namespace fleetsched"),
    (ApiError(403, "forbidden"), "not allowed to create approvals in fleetsched: bind the fleetsched-approver role"),
    (ConnectionRefusedError("refused"), "cannot reach the API server: refused"),
    (ApiError(422, '{"kind": "Status", "message": "Approval.fleetsched.io \\"pod.ml.big\\" is invalid"}'),
     'the API server refused the approval: HTTP 422: Approval.fleetsched.io "pod.ml.big" is invalid'),
], ids=["exists", "no-crd", "forbidden", "unreachable", "invalid"])
def test_each_refusal_of_approve_is_one_line(error: Exception, message: str) -> None:
    existing = approval_object("fleetsched", "ml/big", False, False, "", "bob")
    rest = FakeRest({("POST", APPROVALS): error, ("GET", f"{APPROVALS}/pod.ml.big"): existing})
    with pytest.raises(FleetschedError) as caught:
        approve(rest, "fleetsched", "ml/big", gang=False, approved=True, reason="", approver="alice")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_approve_with_a_kubeconfig_that_does_not_load_exits_2_with_one_line(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["approve", "big", "--namespace", "ml", "--kubeconfig", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fleetsched: {tmp_path / 'none'}: cannot load the kubeconfig") and err.count("\n") == 1


CONFIGMAP = f"/api/v1/namespaces/fleetsched/configmaps/{SPEND_CONFIGMAP}"


def test_the_stored_book_is_created_then_replaced_at_its_version_and_a_conflict_is_read_past() -> None:
    stored = {"metadata": {"resourceVersion": "7"}, "data": {"state": "old"}}
    rest = FakeRest({("GET", CONFIGMAP): [ApiError(404, "none"), stored],
                     ("POST", "/api/v1/namespaces/fleetsched/configmaps"): {"metadata": {"resourceVersion": "5"}},
                     ("PUT", CONFIGMAP): [ApiError(409, "conflict"), {"metadata": {"resourceVersion": "8"}}]})
    store = GovernanceStore(rest, "fleetsched")
    assert store.read_spend() is None
    store.write_spend("one")  # none yet: created
    store.write_spend("two")  # at version 5: another replica wrote since (409), read, written at 7
    methods = [(method, (body or {}).get("metadata", {}).get("resourceVersion")) for method, _, body in rest.sent]
    assert methods == [("GET", None), ("POST", None), ("PUT", "5"), ("GET", None), ("PUT", "7")]
    assert rest.sent[-1][2]["data"] == {"state": "two"}


def test_the_stored_state_reads_back_and_a_garbled_one_is_refused() -> None:
    text = spend_state('{"version": 1}', {"ml/a@u": (1.5, 6.88)})
    assert read_spend_state(text) == (json.dumps({"version": 1}), {"ml/a@u": (1.5, 6.88)})
    for bad in ('{"book": {}}', '{"book": {}, "started": {"x": [1]}}', "[]"):
        with pytest.raises(ValueError):
            read_spend_state(bad)
