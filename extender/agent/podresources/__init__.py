"""Generated stubs of the kubelet's PodResources v1 API (api.proto; see README.md)."""
