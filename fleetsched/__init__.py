"""fleetsched's entry package: the `fleetsched` command and the Python API notebooks import.

It is the only package that imports both worlds (the simulator and the Kubernetes extender);
the scheduling core, the policies, the traces and each world know nothing of it.

>>> import fleetsched
>>> result = fleetsched.plan("traces/samples/demo-cluster.toml", "traces/samples/demo-jobs.jsonl", "cost-greedy")
>>> len(result.decision.placements), len(result.decision.pending)
(12, 5)
"""

from typing import TYPE_CHECKING, Any

from fleetsched.api import Plan, compare, load_profile, plan, simulate, survey

# Sweeps (docs/sweep.md): the package attribute `sweep` is the function (imported after its
# module, so the name is rebound to it); the module stays fleetsched.sweep in sys.modules.
from fleetsched.sweep import load_sweep, sweep

__all__ = ["Plan", "compare", "load_profile", "plan", "simulate", "survey"]
__all__ += ["load_sweep", "sweep"]

# Run and comparison directories as pandas DataFrames (fleetsched.frames), imported when first
# used: pandas would add a quarter of a second to every command.
if TYPE_CHECKING:
    from fleetsched.frames import Comparison as Comparison
    from fleetsched.frames import Run as Run
    from fleetsched.frames import load_comparison as load_comparison
    from fleetsched.frames import load_run as load_run
__all__ += ["Comparison", "Run", "load_comparison", "load_run"]


def __getattr__(name: str) -> Any:
    if name in ("Comparison", "Run", "load_comparison", "load_run"):
        from fleetsched import frames

        return getattr(frames, name)
    raise AttributeError(f"module 'fleetsched' has no attribute {name!r}")
