"""Policy plugins, the explicit REGISTRY of them, and the bundled profiles.

A new policy is one class in this package, one line here and one table test.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from policies.autoscale import ScaleUpCheapest, ScaleUpLeastWaste
from policies.backfill import EasyBackfill
from policies.cost import CheapestPool
from policies.fill import FGD, BestFit, DotProd, GpuClustering, GpuPacking, Random
from policies.fit import GpuModelFit, GpuShareFit, MigFit, WholeGpuFit
from policies.governance import ApprovalGate, BudgetGuard, BudgetSpotOnly, FairShareOrder, FairShareReclaim, QuotaLimit
from policies.literature import DrfOrder, RoundsCost, RoundsShuffle, Tiresias
from policies.ordering import Fifo, PriorityThenAge
from policies.packing import LeastAllocated, MostAllocated
from policies.preemption import LeastWorkLost, PriorityPreemption
from policies.rounds import (
    RoundsFifo,
    RoundsLas,
    RoundsLasAgnostic,
    RoundsModel,
    RoundsPreemption,
    RoundsShareFit,
    RoundsSjf,
    RoundsSrtf,
)
from policies.spot import SpotTolerance
from scheduler.errors import InputError
from scheduler.plugin import Plugin
from scheduler.profile import Profile, load_profile

REGISTRY: Mapping[str, type[Plugin]] = {
    cls.name: cls
    for cls in (
        PriorityThenAge,
        Fifo,
        GpuModelFit,
        WholeGpuFit,
        GpuShareFit,
        MigFit,
        SpotTolerance,
        MostAllocated,
        LeastAllocated,
        CheapestPool,
        PriorityPreemption,
        LeastWorkLost,
        ScaleUpCheapest,
        ScaleUpLeastWaste,
        EasyBackfill,
        BudgetGuard,
        BudgetSpotOnly,
        QuotaLimit,
        ApprovalGate,
        FairShareOrder,
        FairShareReclaim,
        RoundsLas,
        RoundsLasAgnostic,
        RoundsFifo,
        RoundsSjf,
        RoundsSrtf,
        RoundsShareFit,
        RoundsModel,
        RoundsPreemption,
        Random,
        DotProd,
        GpuClustering,
        GpuPacking,
        BestFit,
        FGD,
        RoundsCost,
        Tiresias,
        RoundsShuffle,
        DrfOrder,
    )
}

PROFILES_DIR = Path(__file__).parent / "profiles"


def bundled_profiles() -> list[str]:
    """The names of the profiles shipped in policies/profiles/."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.toml"))


def profile(name_or_path: str) -> Profile:
    """A bundled profile by name (`default`, `binpack`, `cost-greedy`) or a profile file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILES_DIR / f"{name_or_path}.toml"
        if not path.exists():
            known = ", ".join(bundled_profiles())
            raise InputError(f"no bundled profile {name_or_path!r}; bundled: {known}; or give a .toml path")
    return load_profile(path, REGISTRY)
