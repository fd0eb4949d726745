"""The extender's configuration and its command (the manifests: tests/test_deploy.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import urllib3

from extender.config import load_config
from extender.kubeapi import Mirror, Rest
from extender.state import ClusterView
from fleetsched.cli import main
from scheduler.catalog import default_catalog
from scheduler.errors import InputError
from scheduler.model import Capacity

ROOT = Path(__file__).resolve().parent.parent
CATALOG = default_catalog()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extender.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_configuration_loads() -> None:
    config = load_config(ROOT / "deploy/extender.toml", CATALOG)
    assert config.port == 8888 and config.profile == "cost-cpsat" and config.scheduler_name == "fleetsched"
    assert [pool.name for pool in config.pools] == ["h100-spot", "h100-on-demand", "a10g-shared"]
    assert config.pools[0].capacity is Capacity.SPOT and config.pools[2].sharing


POOL = '[[pool]]\nname = "p"\nmatch = { a = "b" }\n'
BAD = {
    "unknown-key": ("prot = 1\n", 1, "prot: unknown key"),
    "port": ("port = 70000\n", 1, "port: must be a port number"),
    "interval": ("planner_interval_s = 0\n", 1, "planner_interval_s: must be a number of seconds above 0"),
    "tls-half": ('tls_cert = "c.pem"\n', None, "tls_key: HTTPS needs both"),
    "pool-no-match": ('[[pool]]\nname = "p"\n', None, "pool[0].match: must be a table"),
    "pool-price": ('[[pool]]\nname = "p"\nmatch = { a = "b" }\nprice = "aws:nope:spot"\n', 4, "pool[0].price: no price"),
    "pool-gpu": ('[[pool]]\nname = "p"\nmatch = { a = "b" }\ngpu = "Q1"\n', 4, "pool[0].gpu: unknown GPU model"),
    "pool-capacity": ('[[pool]]\nname = "p"\nmatch = { a = "b" }\ncapacity = "cheap"\n', 4, "must be one of on-demand"),
    "pool-twice": ('[[pool]]\nname = "p"\nmatch = { a = "b" }\nusd_per_node_hour = 1\n'
                   '[[pool]]\nname = "p"\nmatch = { a = "c" }\nusd_per_node_hour = 1\n', 6,
                   "pool[1].name: pool 'p' is named twice"),
    # Numbers that are not finite: the checks compared `<= 0` only, and NaN and inf passed.
    "interval-nan": ("planner_interval_s = nan\n", 1, "planner_interval_s: must be a number of seconds above 0, got nan"),
    "stale-inf": ("stale_after_s = inf\n", 1, "stale_after_s: must be a number of seconds above 0, got inf"),
    "read-timeout-nan": ("read_timeout_s = nan\n", 1, "read_timeout_s: must be a number of seconds above 0"),
    "usage-window-inf": ("usage_window_s = inf\n", 1, "usage_window_s: must be a number of seconds above 0"),
    "lease-duration-inf": ("lease_duration_s = inf\n", 1, "lease_duration_s: must be a number of seconds above 0"),
    "pool-usd-nan": (f"{POOL}usd_per_node_hour = nan\n", 4, "pool[0].usd_per_node_hour: must be a finite number"),
    "pool-rate-nan": (f'{POOL}price = "aws:p5.48xlarge:spot"\ninterruptions_per_node_hour = nan\n', 5,
                      "pool[0].interruptions_per_node_hour: must be a finite number"),
    "pool-notice-inf": (f"{POOL}usd_per_node_hour = 3\nnotice_s = inf\n", 5, "pool[0].notice_s: must be a finite number"),
    # What a cluster file's pool may not do, an extender's may not either (scheduler.cluster's checks).
    "pool-two-prices": (f'{POOL}usd_per_node_hour = 3\nprice = "aws:p5.48xlarge:spot"\n', 4,
                        'pool[0].usd_per_node_hour: give one of price = "cloud:instance:capacity", usd_per_node_hour'
                        " (not price and usd_per_node_hour)"),
    "pool-no-price": (POOL, 1, "pool[0].price: give one of price"),
    "pool-price-gpu": (f'{POOL}gpu = "A100-80GB"\nprice = "aws:p5.48xlarge:spot"\n', 5,
                       "pool[0].price: aws:p5.48xlarge:spot is a H100-80GB price; the pool has A100-80GB"),
    "pool-price-capacity": (f'{POOL}capacity = "on-demand"\nprice = "aws:p5.48xlarge:spot"\n', 4,
                            "pool[0].capacity: is on-demand but the price is a spot price"),
    "pool-rate-on-demand": (f'{POOL}capacity = "on-demand"\nusd_per_node_hour = 3\ninterruptions_per_node_hour = 0.1\n',
                            6, "pool[0].interruptions_per_node_hour: only spot pools are interrupted; this pool is"),
    "pool-rate-no-capacity": (f"{POOL}usd_per_node_hour = 3\ninterruptions_per_node_hour = 0.1\n", 5,
                              'only spot pools are interrupted; set capacity = "spot"'),
    "scheduler-name": ('scheduler_name = ""\n', 1, "scheduler_name: must name the scheduler"),
    "prefix": ('prefix = "no-slash"\n', 1, 'prefix: must be a URL path starting with "/"'),
    "port-zero": ("port = 0\n", 1, "port: must be a port number 1..65535, got 0"),
    # helper lease: leader election
    "leader-elect": ('leader_elect = "yes"\n', 1, "leader_elect: must be true or false"),
    "lease-name": ('lease_name = ""\n', 1, "lease_name: must name the Lease"),
    "lease-namespace": ("lease_namespace = 3\n", 1, "lease_namespace: must be a string"),
    "lease-duration": ("lease_duration_s = -1\n", 1, "lease_duration_s: must be a number of seconds above 0"),
    "renew-deadline": ("lease_duration_s = 10\nrenew_deadline_s = 10\n", 2,
                       "renew_deadline_s: must be below lease_duration_s (10)"),
    "retry-period": ("retry_period_s = 9\n", 1, "retry_period_s: must be below renew_deadline_s / 1.2"),
}


def test_paths_in_the_file_are_read_from_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = write(folder, 'tls_cert = "tls/cert.pem"\ntls_key = "/abs/key.pem"\nkubeconfig = "kube/config"\n'
                         'token_file = "token"\n')  # fmt: skip
    monkeypatch.chdir(tmp_path)  # elsewhere: a path must not depend on where the command runs
    config = load_config(path, default_catalog())
    assert (config.tls_cert, config.tls_key) == (str(folder / "tls/cert.pem"), "/abs/key.pem")
    assert (config.kubeconfig, config.token_file) == (str(folder / "kube/config"), str(folder / "token"))


def test_the_leader_election_keys_load_with_client_go_defaults(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, ""), CATALOG)
    assert (default.leader_elect, default.lease_name, default.lease_namespace) == (True, "fleetsched-extender", "")
    assert (default.lease_duration_s, default.renew_deadline_s, default.retry_period_s) == (15.0, 10.0, 2.0)
    text = 'leader_elect = false\nlease_name = "x"\nlease_namespace = "ops"\nlease_duration_s = 4\n' \
           "renew_deadline_s = 3\nretry_period_s = 0.5\n"
    config = load_config(write(tmp_path, text), CATALOG)
    assert (config.leader_elect, config.lease_name, config.lease_namespace) == (False, "x", "ops")
    assert (config.lease_duration_s, config.renew_deadline_s, config.retry_period_s) == (4.0, 3.0, 0.5)


@pytest.mark.parametrize(("text", "line", "message"), list(BAD.values()), ids=list(BAD))
def test_bad_configurations_name_file_line_and_key(tmp_path: Path, text: str, line: int | None, message: str) -> None:
    with pytest.raises(InputError) as caught:
        load_config(write(tmp_path, text), CATALOG)
    text_of = str(caught.value)
    assert message in text_of and "\n" not in text_of
    if line is not None:
        assert f"extender.toml:{line}:" in text_of


def test_the_command_checks_a_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extender", "--config", str(ROOT / "deploy/extender.toml"), "--check"]) == 0
    assert "ok (3 pools, profile cost-cpsat, port 8888)" in capsys.readouterr().out
    assert main(["extender", "--config", str(write(tmp_path, 'profile = "nope"\n')), "--check"]) == 2
    assert "no bundled profile 'nope'" in capsys.readouterr().err


def test_an_unreachable_api_server_leaves_the_last_view_and_reports_its_age() -> None:
    view = ClusterView((), CATALOG, "fleetsched")
    view.replace("node", [{"metadata": {"name": "n-1", "labels": {"nvidia.com/gpu.product": "H100-80GB"}},
                           "status": {"allocatable": {"nvidia.com/gpu": "8"},
                                      "conditions": [{"type": "Ready", "status": "True"}]}}])
    mirror = Mirror(Rest("http://127.0.0.1:9", verify=False), view, watch_timeout_s=1)  # nothing listens on port 9
    with pytest.raises(urllib3.exceptions.HTTPError):
        mirror.sync_once()
    mirror.start()
    threading.Event().wait(1.0)
    mirror.stop()
    assert list(view.view().snapshot.nodes) == ["n-1"]  # the last state stays
    assert view.age_s() >= 1.0
