"""The batch placer: every waiting job of a cycle placed at once by one CP-SAT solve.

The pipeline, one module each, in the order a cycle runs it:

- `problem`: the cycle's jobs and nodes as counts over classes (job groups, node classes),
  not job-by-node booleans;
- `objective`: what each count costs, in dollars per hour, from `scheduler.costing`;
- `model`: the CP-SAT model of a problem (variables, constraints; `solve` sets objectives);
- `relaxation`: its LP relaxation, a proven bound and the neighbourhoods its answer induces;
- `solve`: the phases of one solve (all placed? tier by tier, then cost), each returning an
  answer and a bound, and `CpSatPlacer`;
- `expansion`: the solver's counts dealt out onto concrete nodes and GPUs;
- `placer`: `BatchPlacer`, which runs the greedy answer first and the greedy tail after;
- `workarounds`: the OR-Tools version-specific settings, each with the fault it avoids.

This package is the only part of the core that imports OR-Tools, and it does so only in
`model`, `relaxation`, `solve` and `workarounds`: the rest loads without it.
"""
