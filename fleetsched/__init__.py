"""fleetsched's entry package: the `fleetsched` command and the Python API notebooks import.

It is the only package that imports both worlds (the simulator and the Kubernetes extender);
the scheduling core, the policies, the traces and each world know nothing of it.

>>> import fleetsched
>>> result = fleetsched.plan("traces/samples/demo-cluster.toml", "traces/samples/demo-jobs.jsonl", "cost-greedy")
>>> len(result.decision.placements), len(result.decision.pending)
(12, 5)
"""

from fleetsched.api import Plan, compare, load_profile, plan, simulate, survey

__all__ = ["Plan", "compare", "load_profile", "plan", "simulate", "survey"]

# Sweeps (docs/sweep.md): the package attribute `sweep` is the function; the module is fleetsched.sweep in sys.modules.
from fleetsched.sweep import load_sweep, sweep

__all__ += ["load_sweep", "sweep"]
