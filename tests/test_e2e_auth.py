"""End to end: the extender off loopback lets only the caller with the right credentials bind.

The extender serves its verbs on this machine's own, non-loopback address with TLS, a client
CA and a token. A POST /bind with no credentials, a wrong token or a certificate from another
CA binds nothing; the real kube-scheduler 1.20, given a client certificate in its extender
`tlsConfig` (it has no way to send a token), still schedules and binds the pod through it.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from extender.kubeapi import wait_until
from extender.main import start
from extender.state import GPUS
from scheduler.errors import InputError
from tests.e2e.controlplane import ControlPlane, add_node, add_pod, control_plane, free_port, local_extender, node_of
from tests.pki import Issued, authority, issue

H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "node.kubernetes.io/instance-type": "p5.48xlarge",
        "karpenter.sh/capacity-type": "on-demand"}
TOKEN = "e2e-extender-token"


def outward_address() -> str:
    """An IPv4 address of this machine other than loopback (where a pod's IP would be)."""
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    addresses = [address for address in found if "." in address and not address.startswith("127.")]
    assert addresses, "this machine has no non-loopback IPv4 address to serve on"
    return addresses[0]


def start_scheduler(plane: ControlPlane, url: str, ca: Issued, identity: Issued) -> None:
    """kube-scheduler 1.20 calling the extender over HTTPS with a client certificate."""
    config = plane.folder / "scheduler-auth.yaml"
    config.write_text(
        "apiVersion: kubescheduler.config.k8s.io/v1beta1\nkind: KubeSchedulerConfiguration\n"
        f"clientConnection:\n  kubeconfig: {plane.kubeconfig}\n"
        "leaderElection:\n  leaderElect: false\npercentageOfNodesToScore: 100\n"
        f"healthzBindAddress: 127.0.0.1:{free_port()}\nmetricsBindAddress: 127.0.0.1:{free_port()}\n"
        "profiles:\n- schedulerName: fleetsched\n"
        f"extenders:\n- urlPrefix: {url}\n  filterVerb: filter\n  prioritizeVerb: prioritize\n  bindVerb: bind\n"
        "  weight: 10\n  enableHTTPS: true\n  httpTimeout: 5s\n  nodeCacheCapable: true\n  ignorable: false\n"
        f"  tlsConfig:\n    certFile: {identity.cert}\n    keyFile: {identity.key}\n    caFile: {ca.cert}\n"
        "  managedResources:\n  - name: nvidia.com/gpu\n    ignoredByScheduler: false\n",
        encoding="utf-8",
    )
    plane._spawn("kube-scheduler-auth", [str(plane.folder / "bin" / "kube-scheduler"), "--config", str(config),
                                         "--secure-port", "0", "--port", "0", "-v", "1"])  # fmt: skip


def bind(address: str, port: int, context: ssl.SSLContext, headers: dict[str, str], uid: str) -> tuple[int, Any]:
    """POST /extender/bind for pod ml/waiting onto gpu-1; the status and reply, or 0 and the error."""
    body = json.dumps({"PodName": "waiting", "PodNamespace": "ml", "PodUID": uid, "Node": "gpu-1"}).encode()
    connection = http.client.HTTPSConnection(address, port, context=context, timeout=10)
    try:
        connection.request("POST", "/extender/bind", body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    except (ssl.SSLError, OSError, http.client.HTTPException) as error:
        return 0, str(error)
    finally:
        connection.close()


def test_off_loopback_only_the_authenticated_kube_scheduler_binds(tmp_path: Path) -> None:
    address = outward_address()
    ca, rogue = authority(tmp_path, "ca"), authority(tmp_path, "rogue")
    server_cert = issue(tmp_path, ca, "extender", ip=address)
    scheduler_cert = issue(tmp_path, ca, "kube-scheduler", client=True)
    rogue_cert = issue(tmp_path, rogue, "intruder", client=True)
    (tmp_path / "token").write_text(TOKEN, encoding="utf-8")
    config = replace(local_extender(), address=address, tls_cert=str(server_cert.cert), tls_key=str(server_cert.key),
                     client_ca=str(ca.cert), token_file=str(tmp_path / "token"))
    with control_plane() as plane:
        rest = plane.rest
        add_node(rest, "gpu-1", H100, {"nvidia.com/gpu": "8"})
        server, stop = start(config, rest)
        try:
            host, port = server.server_address
            assert host == address and server.url.startswith(f"https://{address}:")
            pod = add_pod(rest, "waiting", {"nvidia.com/gpu": "2"})
            uid = pod["metadata"]["uid"]
            planner = server.extender.planner  # type: ignore[attr-defined]

            def planned() -> bool:  # the plan grants the pod gpu-1: a bind that got through would bind it
                plan = planner.current()
                return plan is not None and plan.nodes.get(uid, ("",))[0] == "gpu-1"

            assert wait_until(planned, 30, 0.2)

            def trusting(identity: Issued | None = None) -> ssl.SSLContext:
                context = ssl.create_default_context(cafile=str(ca.cert))
                if identity is not None:
                    context.load_cert_chain(str(identity.cert), str(identity.key))
                return context

            assert bind(address, port, trusting(), {}, uid)[0] == 401
            assert bind(address, port, trusting(), {"Authorization": "Bearer not-the-token"}, uid)[0] == 403
            status, reply = bind(address, port, trusting(rogue_cert), {}, uid)
            assert status == 0, reply  # another CA's certificate: the handshake is refused
            assert node_of(rest, "waiting") == ""  # nothing was bound
            start_scheduler(plane, server.url, ca, scheduler_cert)
            bound = wait_until(lambda: node_of(rest, "waiting") == "gpu-1", 60, 0.2)
            assert bound, plane.logs("kube-scheduler-auth")
            annotations = rest.request("GET", "/api/v1/namespaces/ml/pods/waiting")["metadata"]["annotations"]
            assert annotations[GPUS] == "0,1"  # bound by the extender, with its grant
        finally:
            stop()


def test_the_extender_refuses_to_serve_off_loopback_without_credentials() -> None:
    with pytest.raises(InputError, match="off loopback, lets anyone who reaches it bind pods"):
        start(replace(local_extender(), address=outward_address()))
