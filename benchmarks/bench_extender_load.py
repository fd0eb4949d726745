"""Benchmark: the extender's server under many connections, some of which never say a word.

The server (the real `GpuExtender` over a cluster view of `--nodes` GPU nodes, no API server)
runs in a process of its own with the shipped limits (16 workers, backlog 128). This process
opens `--connections` connections on loopback; `--silent` of them send nothing and are held
open throughout; each other one sends `--rounds` filter requests naming every node, one after
the other on its keep-alive connection, as kube-scheduler does. Two phases:

- paced: the requests spread evenly over time at `--rate` requests/s in all (kube-scheduler's
  own cycle is serial, a few hundred pods/s at most);
- burst: every active connection sends at once, `--rounds` times (a queue that only
  `workers` threads drain: latency is then queueing, not service).

Prints, per phase, p50/p99/max latency of the answered requests (client side: the request
written to the answer read), the server's peak RSS (VmHWM) before and after, how many silent
connections were still open at the end, and the machine. Target: paced p99 under 10 ms.

    python benchmarks/bench_extender_load.py [--connections 1000] [--silent 100] [--rate 500] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machine import describe, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve(nodes: int, read_timeout_s: float) -> None:
    """The server process: prints its port, serves until its standard input closes."""
    from bench_extender import NoApi, node, pod

    import policies
    from extender.server import ExtenderServer, Limits, serve_in_thread
    from extender.state import ClusterView
    from extender.verbs import GpuExtender
    from scheduler.catalog import default_catalog

    sys.setswitchinterval(0.0005)  # as `fleetsched extender` runs
    catalog = default_catalog()
    view = ClusterView((), catalog, "fleetsched")
    view.replace("node", [node(f"gpu-{n:05d}") for n in range(nodes)])
    view.replace("pod", [pod(f"p-{n}") for n in range(200)])
    extender = GpuExtender.of(view, NoApi(), catalog, policies.profile("cost-greedy"))
    extender.planner.plan()
    # A long read timeout keeps the silent connections open for the whole run (the shipped 5 s
    # would close them, which is the point of it, but then they would no longer be "open").
    server = ExtenderServer(("127.0.0.1", 0), extender, prefix="/extender",
                            limits=Limits(read_timeout_s=read_timeout_s, backlog=128))
    stop = serve_in_thread(server)
    sys.stdout.write(f"{server.server_address[1]}\n")
    sys.stdout.flush()
    sys.stdin.read()
    stop()


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def _open(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    gate = asyncio.Semaphore(64)  # connect a few at a time: the kernel's queue is the backlog

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await asyncio.open_connection("127.0.0.1", port)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> float:
    started = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
    await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode("latin-1"))
    return time.perf_counter() - started


def _summary(samples: list[float], wall_s: float) -> dict[str, Any]:
    samples = sorted(samples)
    return {"requests": len(samples), "p50_ms": round(1000 * samples[len(samples) // 2], 2),
            "p99_ms": round(1000 * samples[int(0.99 * (len(samples) - 1))], 2),
            "max_ms": round(1000 * samples[-1], 2), "requests_per_s": round(len(samples) / wall_s, 1)}  # fmt: skip


async def load(port: int, args: argparse.Namespace) -> dict[str, Any]:
    names = [f"gpu-{n:05d}" for n in range(args.nodes)]
    from bench_extender import pod

    silent = await _open(port, args.silent)
    active = await _open(port, args.connections - args.silent)
    requests = []
    for number in range(len(active)):
        body = json.dumps({"Pod": pod(f"p-{number % 200}"), "Nodes": None, "NodeNames": names}).encode()
        head = f"POST /extender/filter HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        requests.append(head.encode() + body)
    report: dict[str, Any] = {}
    # Paced: connection i sends at i/rate, then every len(active)/rate seconds.
    period_s = len(active) / args.rate
    paced: list[float] = []
    started = time.perf_counter()

    async def paced_client(index: int) -> None:
        reader, writer = active[index]
        for round_number in range(args.rounds):
            delay = started + index / args.rate + round_number * period_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            paced.append(await _ask(reader, writer, requests[index]))

    await asyncio.gather(*(paced_client(index) for index in range(len(active))))
    report["paced"] = {"rate_per_s": args.rate, **_summary(paced, time.perf_counter() - started)}
    burst: list[float] = []
    started = time.perf_counter()
    for _ in range(args.rounds):
        burst += await asyncio.gather(*(_ask(reader, writer, requests[i]) for i, (reader, writer) in enumerate(active)))
    report["burst"] = _summary(burst, time.perf_counter() - started)
    report["silent_still_open"] = sum(1 for reader, _ in silent if not reader.at_eof())
    for _, writer in silent + active:
        writer.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--silent", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=100, help="nodes in the cluster, all named in every filter")
    parser.add_argument("--rounds", type=int, default=3, help="requests per active connection in each phase")
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s in all in the paced phase")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--read-timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.nodes, args.read_timeout)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket each, here and in the server
    wanted = args.connections + 256
    if soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--nodes", str(args.nodes)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        idle_rss = peak_rss_mib(server.pid)
        report = asyncio.run(load(port, args))
        report.update(connections=args.connections, silent=args.silent, nodes=args.nodes,
                      peak_rss_mib_before=idle_rss, peak_rss_mib=peak_rss_mib(server.pid), machine=machine())
        server.stdin.close()
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    lines = [describe(), f"{args.connections} connections, {args.silent} silent; filters naming {args.nodes} nodes; "
             f"server pid {server.pid} (this process {os.getpid()})"]  # fmt: skip
    for phase in ("paced", "burst"):
        row = report[phase]
        rate = f" at {row['rate_per_s']:g}/s" if phase == "paced" else ""
        lines.append(f"{phase}{rate}: {row['requests']} answered, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                     f"max {row['max_ms']} ms, {row['requests_per_s']} requests/s")
    lines.append(f"server peak RSS {report['peak_rss_mib_before']} MiB idle, {report['peak_rss_mib']} MiB after; "
                 f"silent connections still open: {report['silent_still_open']} of {args.silent}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
