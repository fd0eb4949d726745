"""The extended resources kube-scheduler sends to the extender: whole GPUs and every MIG profile of the catalog.

kube-scheduler asks an extender about a pod only when the pod requests one of the extender's
`managedResources`, so the scheduler configurations in deploy/ list `nvidia.com/gpu` and one
`nvidia.com/mig-<profile>` for each MIG profile of every GPU in the catalog (NVIDIA's device
plugin, mixed strategy, turns a profile's `+` into `.`: `1g.10gb+me` is `nvidia.com/mig-1g.10gb.me`).
`deploy/managed_resources.py` prints the list for a scheduler configuration; a test checks
that every configuration in deploy/ lists exactly these.
"""

from __future__ import annotations

from extender.translate import GPU, MIG_PREFIX
from scheduler.catalog import Catalog


def mig_resource(profile: str) -> str:
    """The device plugin's resource name of a MIG profile (`1g.10gb+me` -> `nvidia.com/mig-1g.10gb.me`)."""
    return MIG_PREFIX + profile.replace("+", ".")


def managed_resources(catalog: Catalog) -> tuple[str, ...]:
    """`nvidia.com/gpu`, then each MIG profile's resource of the catalog's GPUs, once each, sorted."""
    profiles = {profile for model in catalog.models.values() if model.mig is not None for profile in model.mig.profiles}
    return (GPU, *sorted({mig_resource(profile) for profile in profiles}))
