"""The GPU node agent: NVML telemetry, the kubelet's pods, allocated-but-idle detection, Prometheus metrics.

`nvml` reads every GPU and MIG instance through NVML, `kubelet` asks the kubelet which pod holds
which device, `exporter` joins them, applies `scheduler.idleness` and serves `/metrics`
(docs/agent.md). Nothing here may crash the agent: what cannot be read is a metric and one log line.
"""

#: Where the kubelet serves its PodResources API.
DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
#: The agent's /metrics port: beside DCGM exporter's 9400 on the same node.
DEFAULT_PORT = 9402
