"""Where a command's CPU goes, by kind of process (issue 31: the suite's CPU time).

    python benchmarks/process_cpu.py -- make test
    python benchmarks/process_cpu.py --json out.json -- .venv/bin/raybench sweep --config jobs/smoke.yaml

Runs the command and, every ``--interval`` seconds until it exits, reads ``/proc/<pid>/stat``
of every process that started after it: its user + system CPU and its title (Ray renames its
workers ``ray::<actor or task>``, ``ray::IDLE`` between tasks). Prints the CPU seconds and the
number of processes of each kind: Ray trial actors (``ray::ImplicitFunc``), other Ray workers,
Ray's own processes (GCS, raylet, dashboard and its modules, agents, log monitor), each
``raybench`` sub-command, pytest(-xdist) workers, the rest by name. Linux only.

A process that lives less than one interval may be missed, and one that is renamed after its
last sample keeps its last title: the total is a lower bound of the machine's CPU, which the
last line gives from ``/proc/stat`` for comparison (every process on the machine counts there).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict

TICK = os.sysconf("SC_CLK_TCK")
RAY_OWN = (("gcs_server", "Ray GCS"), ("raylet", "Ray raylet"), ("dashboard/agent.py", "Ray agent"),
           ("dashboard/dashboard.py", "Ray dashboard"), ("log_monitor", "Ray log monitor"),
           ("autoscaler/_private/monitor", "Ray monitor"),
           ("multiprocessing.forkserver", "multiprocessing forkserver (the dashboard's modules)"),
           ("multiprocessing.resource_tracker", "multiprocessing resource tracker"))


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / TICK


def sample(seen: dict, skip: set) -> None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            title = stat[stat.find("(") + 1:stat.rfind(")")]
            fields = stat[stat.rfind(")") + 2:].split()
            key = (int(pid), int(fields[19]))  # pid and start time: pids are reused
            if key in skip:
                continue
            entry = seen.get(key)
            if entry is None:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:400]
                entry = seen[key] = {"cmd": cmd}
            entry["cpu"] = (int(fields[11]) + int(fields[12])) / TICK
            entry["title"] = title
        except (OSError, IndexError, ValueError):  # ended between listing and reading
            continue


def kind(entry: dict) -> str:
    title, cmd = entry["title"], entry["cmd"]
    if title.startswith("ray::ImplicitFu"):
        return "Ray trial actor (ray::ImplicitFunc)"
    if title.startswith("ray::Dashboard") or title.startswith("ray::RuntimeEnv"):
        return "Ray agent"
    if title.startswith("ray-dashboard"):
        return "Ray dashboard"
    if title.startswith("ray::"):
        return f"Ray worker {title}"
    for needle, name in RAY_OWN:
        if needle in cmd:
            return name
    sub = re.search(r"(?:raybench\.cli|bin/raybench) (\S+)", cmd)
    if sub:
        return f"raybench {sub.group(1)}"
    if "exec(eval(sys.stdin.readline()))" in cmd or " -m pytest" in cmd:
        return "pytest process"
    return f"other: {title}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    p.add_argument("--json", help="also write every process seen (title, command, CPU) here")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command to measure after --")
    before: dict = {}
    sample(before, set())
    skip = set(before)  # processes already running are not the command's
    seen: dict = {}
    busy0, t0 = machine_busy(), time.monotonic()
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        sample(seen, skip)
        time.sleep(args.interval)
    sample(seen, skip)
    wall, busy = time.monotonic() - t0, machine_busy() - busy0
    totals: dict = defaultdict(lambda: [0.0, 0])
    for entry in seen.values():
        totals[kind(entry)][0] += entry["cpu"]
        totals[kind(entry)][1] += 1
    print(f"{'CPU s':>8} {'procs':>6}  kind")
    for name, (cpu, n) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        if cpu >= 0.5:
            print(f"{cpu:8.1f} {n:6d}  {name}")
    sampled = sum(cpu for cpu, _ in totals.values())
    print(f"{sampled:8.1f} {len(seen):6d}  all sampled processes")
    print(f"exit {proc.returncode}; wall {wall:.1f} s; machine CPU {busy:.1f} s (/proc/stat)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(list(seen.values()), f)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
