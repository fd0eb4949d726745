"""The `fleetsched` command: parses arguments, calls the Python API (`fleetsched.api`), prints.

User mistakes print one line on stderr (`fleetsched: FILE:LINE: FIELD: problem`) and exit 2;
`mig check` exits 1 for an illegal layout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import policies
from fleetsched import api
from fleetsched.agent_verbs import add_agent_verbs
from fleetsched.budget_verbs import add_budget_verbs
from fleetsched.fill_verbs import add_fill_verbs
from fleetsched.report_verbs import add_report_verbs
from fleetsched.simulate_verbs import add_simulation_verbs
from fleetsched.stopping import StopSignalError
from fleetsched.sweep_verbs import add_sweep_verb
from fleetsched.trace_verbs import add_trace_verbs
from fleetsched.usage_verbs import add_usage_verbs
from scheduler import mig
from scheduler.catalog import MigGeometry, default_catalog
from scheduler.decision import Decision, Pending
from scheduler.enforcement import PLANNED, warn_unenforced
from scheduler.errors import FleetschedError, InputError
from scheduler.model import ClusterSnapshot, Job, Placement, RequestKind
from simulator.rundir import fleetsched_version

EXIT_INPUT = 2
Output = tuple[int, str]
"""What a verb returns: the exit code and the text for stdout."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result: Output = args.run(args)
    except FleetschedError as error:
        print(f"fleetsched: {error}", file=sys.stderr)
        return EXIT_INPUT
    except StopSignalError as stopped:  # a run's verb was stopped: its temporary folder is gone
        print(f"fleetsched: {stopped.describe(getattr(args, 'out', None) or '--out')}", file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:  # Ctrl-C in a verb that writes no run: nothing to clean up, no traceback
        print("fleetsched: stopped by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    code, text = result
    try:
        if text:
            print(text)
    except BrokenPipeError:  # pragma: no cover - output piped into `head`
        pass
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetsched", description="GPU cluster scheduler and simulator.")
    parser.add_argument("--version", action="version", version=f"fleetsched {fleetsched_version()}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    mig_parser = verbs.add_parser("mig", help="MIG geometry: maximal layouts, layout checks")
    mig_verbs = mig_parser.add_subparsers(dest="mig_verb", required=True, metavar="VERB")
    layouts = mig_verbs.add_parser("layouts", help="list the maximal MIG layouts of a GPU")
    layouts.add_argument("--gpu", required=True, help="GPU model, e.g. H100-80GB or NVIDIA-A100-SXM4-40GB")
    layouts.add_argument("--profiles", help="comma-separated profiles to use (default: all of the GPU's)")
    layouts.add_argument("--json", action="store_true", help="print JSON")
    layouts.set_defaults(run=_mig_layouts)
    check = mig_verbs.add_parser("check", help="check a MIG layout; exit 0 when legal, 1 when not")
    check.add_argument("--gpu", required=True, help="GPU model")
    check.add_argument("--layout", required=True, help="profile@start list, e.g. 4g.20gb@0,3g.20gb@4")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(run=_mig_check)

    plan = verbs.add_parser("plan", help="one scheduling cycle of a job file on an empty cluster")
    plan.add_argument("--cluster", required=True, help="cluster file (TOML, [[pool]] tables)")
    plan.add_argument("--jobs", required=True, help="canonical job file (.jsonl or .csv)")
    plan.add_argument("--profile", default="default", help="bundled profile name or a .toml path")
    plan.add_argument("--seed", type=int, default=0, help="seed of the cycle's random generator")
    plan.add_argument("--json", action="store_true", help="print JSON")
    plan.add_argument("--governance", help="governance file (TOML): the cycle sees its rules, nothing spent yet")
    plan.set_defaults(run=_plan)
    add_trace_verbs(verbs)
    add_simulation_verbs(verbs)
    add_budget_verbs(verbs)
    add_fill_verbs(verbs)
    add_agent_verbs(verbs)
    add_usage_verbs(verbs)
    add_report_verbs(verbs)  # fleetsched report RUN|COMPARISON|SWEEP --out report.html
    add_sweep_verb(verbs)

    extender = verbs.add_parser("extender", help="run the Kubernetes scheduler extender (filter, prioritize, bind)")
    extender.add_argument("--config", required=True, help="extender configuration (TOML; see deploy/README.md)")
    extender.add_argument("--check", action="store_true", help="check the configuration and exit")
    extender.add_argument("--governance", help="governance file (TOML): budgets, quotas, approvals (overrides the "
                                               "configuration's governance key)")
    extender.set_defaults(run=_extender)
    _add_approve(verbs)
    return parser


def _add_approve(verbs: Any) -> None:
    approve = verbs.add_parser("approve", help="approve (or --reject) a pod or gang an approval rule holds")
    approve.add_argument("target", metavar="POD|GANG", help="the pod's name (with --gang: the gang's)")
    approve.add_argument("--gang", action="store_true", help="name a gang (label fleetsched.io/gang), not a pod")
    approve.add_argument("--namespace", default="default", help="the pod's or gang's namespace (default: default)")
    approve.add_argument("--reject", action="store_true", help="reject it: the pod is refused for good")
    approve.add_argument("--reason", default="", help="why, for the record")
    approve.add_argument("--approver", default="", help="who decides (default: the login name)")
    approve.add_argument("--kubeconfig", default="", help="kubeconfig (default: $KUBECONFIG, else ~/.kube/config)")
    approve.add_argument("--extender-namespace", default="fleetsched",
                         help="the extender's namespace, where approvals live (default: fleetsched)")
    approve.set_defaults(run=_approve)


def _mig_gpu(name: str) -> tuple[str, MigGeometry]:
    """The catalog's name and MIG geometry of `--gpu`; InputError naming `--gpu` otherwise."""
    try:
        gpu = default_catalog().resolve(name)
    except InputError as error:
        raise InputError(error.problem, field="--gpu") from None
    if gpu.mig is None:
        raise InputError(f"{gpu.name} does not support MIG", field="--gpu")
    return gpu.name, gpu.mig


def _mig_profiles(text: str | None, geometry: MigGeometry) -> list[str]:
    """`--profiles` as a list (all the GPU's when not given); InputError on an empty or repeated name."""
    if text is None:
        return list(geometry.profiles)
    profiles = [part.strip() for part in text.split(",")]
    if not all(profiles):
        raise InputError(f"{text!r} has an empty name; list profiles as 1g.10gb,3g.40gb", field="--profiles")
    twice = sorted({name for name in profiles if profiles.count(name) > 1})
    if twice:
        raise InputError(f"names {', '.join(twice)} more than once", field="--profiles")
    return profiles


def _mig_layouts(args: argparse.Namespace) -> Output:
    name, geometry = _mig_gpu(args.gpu)
    profiles = _mig_profiles(args.profiles, geometry)
    try:
        layouts = mig.maximal_layouts(geometry, profiles)
    except InputError as error:
        raise InputError(error.problem, field="--profiles") from None
    if args.json:
        listed = [[str(instance) for instance in layout] for layout in layouts]
        return 0, _json({"gpu": name, "profiles": profiles, "layouts": listed})
    lines = [f"{name}: {len(layouts)} maximal layouts of {', '.join(profiles)}"]
    for layout in layouts:
        compute = sum(geometry.profiles[i.profile].compute_slices for i in layout)
        memory = sum(geometry.profiles[i.profile].memory_slices for i in layout)
        lines.append(f"  {mig.format_layout(layout):<60} compute {compute}/{geometry.compute_slices}"
                     f"  memory {memory}/{geometry.memory_slices}")
    return 0, "\n".join(lines)


def _mig_check(args: argparse.Namespace) -> Output:
    """Exit 1 for a layout the GPU cannot hold; 2 (InputError) for one that names nothing or a
    profile the GPU does not have: that is a mistake in the question, not an answer."""
    name, geometry = _mig_gpu(args.gpu)
    try:
        layout = mig.parse_layout(args.layout)
    except InputError as error:
        raise InputError(error.problem, field="--layout") from None
    if not layout:
        raise InputError("names no instance; list them as profile@start, e.g. 4g.20gb@0,3g.20gb@4", field="--layout")
    unknown = sorted({instance.profile for instance in layout if instance.profile not in geometry.profiles})
    if unknown:
        raise InputError(f"{name} has no MIG profile {', '.join(unknown)}; its profiles: "
                         f"{', '.join(geometry.profiles)}", field="--layout")  # fmt: skip
    found = mig.problems(geometry, layout)
    code = 1 if found else 0
    if args.json:
        layout_text = mig.format_layout(layout)
        return code, _json({"gpu": name, "layout": layout_text, "legal": not found, "problems": found})
    if found:
        return code, f"illegal on {name}: {'; '.join(found)}"
    return code, f"legal on {name}: {mig.format_layout(layout)}"


def _extender(args: argparse.Namespace) -> Output:
    from extender.config import load_config, with_governance
    from extender.main import prepare, serve

    config = load_config(args.config, default_catalog())
    if args.governance:
        config = with_governance(config, args.governance)
    if args.check:  # every file the configuration names loaded as a start loads it
        rules = prepare(config, check_only=True).rules
        governed = f", governance {config.governance} ({len(rules.budgets)} budgets)" if rules is not None else ""
        return 0, (f"{args.config}: ok ({len(config.pools)} pools, profile {config.profile}, port {config.port}"
                   f"{governed})")
    logging.getLogger().setLevel(logging.INFO)
    serve(config)  # a mistake in a file the configuration names stops it before anything starts
    return 0, ""


def _approve(args: argparse.Namespace) -> Output:
    from extender.kubeapi import load_rest
    from fleetsched.approve import approve, check_names

    target = check_names(args.target, args.namespace, args.extender_namespace, gang=args.gang)  # before the kubeconfig
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(
        Path.home() / ".kube" / "config")
    rest = load_rest(kubeconfig)
    line = approve(rest, args.extender_namespace, target, gang=args.gang, approved=not args.reject,
                   reason=args.reason, approver=args.approver or os.environ.get("USER", ""))
    return 0, line


def _plan(args: argparse.Namespace) -> Output:
    api.check_seed(args.seed, "--seed")
    result = api.plan(args.cluster, args.jobs, args.profile, seed=args.seed, governance=args.governance)
    warn_unenforced(args.governance, [args.profile], policies.profile, PLANNED)  # a profile without guardrails
    if args.json:
        return 0, _json(plan_json(result.profile, result.snapshot, result.jobs, result.decision))
    return 0, render_plan(result.profile, result.snapshot, result.jobs, result.decision)


def _grants_text(snapshot: ClusterSnapshot, placement: Placement) -> list[str]:
    request = placement.job.request
    parts = []
    for replica in placement.replicas:
        if request.kind is RequestKind.MIG:
            what = ", ".join(f"GPU {g.gpu} {request.mig_profile}@{g.mig_start}" for g in replica.grants)
        elif request.kind is RequestKind.SHARE:
            what = f"GPU {replica.grants[0].gpu} share {request.milli}m"
        else:
            what = "GPU" + ("s " if len(replica.grants) > 1 else " ") + ",".join(str(g.gpu) for g in replica.grants)
        parts.append(f"{replica.node} [{snapshot.nodes[replica.node].pool}] {what}")
    return parts


def _request_text(job: Job) -> str:
    text = job.request.describe()
    return f"{job.replicas} x {text}" if job.replicas > 1 else text


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def render_plan(profile: str, snapshot: ClusterSnapshot, jobs: Sequence[Job], decision: Decision) -> str:
    """The plan as a table: each job's placement, or why it stays pending, per node class."""
    placed = {p.job.id: p for p in decision.placements}
    counts = ", ".join(_counted(n, noun) for n, noun in ((len(jobs), "job"), (len(snapshot.nodes), "node")))
    lines = [f"profile {profile}: {counts} in {_counted(len(snapshot.pools), 'pool')}", ""]
    lines.append(f"{'JOB':<16} {'REQUEST':<18} PLACEMENT")
    for job in jobs:
        head = f"{job.id:<16} {_request_text(job):<18} "
        if job.id in placed:
            where = _grants_text(snapshot, placed[job.id])
            lines.append(head + where[0])
            lines.extend(" " * len(head) + more for more in where[1:])
            continue
        pending = decision.pending[job.id]
        lines.append(head + f"PENDING {pending.status}")
        for verdict in pending.verdicts:
            nodes = f"{verdict.nodes} node" + ("s" if verdict.nodes != 1 else "")
            lines.append(f"{'':<18}pool {verdict.pool} ({nodes}, {verdict.free}): "
                         f"{verdict.status} [{verdict.status.code.name}]")
    lines += ["", f"placed {len(placed)} of {_counted(len(jobs), 'job')}; {len(jobs) - len(placed)} pending"]
    return "\n".join(lines)


def _pending_json(pending: Pending) -> dict[str, Any]:
    return {
        "job": pending.job,
        "code": pending.status.code.name,
        "plugin": pending.status.plugin,
        "reasons": list(pending.status.reasons),
        "classes": [
            {"pool": v.pool, "nodes": v.nodes, "free": v.free, "code": v.status.code.name,
             "plugin": v.status.plugin, "reasons": list(v.status.reasons)}
            for v in pending.verdicts
        ],
    }


def plan_json(profile: str, snapshot: ClusterSnapshot, jobs: Sequence[Job], decision: Decision) -> dict[str, Any]:
    """The plan as plain data (the `--json` output)."""
    return {
        "profile": profile,
        "placements": [
            {
                "job": p.job.id,
                "replicas": [
                    {"node": r.node, "pool": snapshot.nodes[r.node].pool,
                     "grants": [{"gpu": g.gpu, "mig_start": g.mig_start} for g in r.grants]}
                    for r in p.replicas
                ],
            }
            for p in decision.placements
        ],
        "pending": [_pending_json(decision.pending[job.id]) for job in jobs if job.id in decision.pending],
    }


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
