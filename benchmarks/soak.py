"""Soak: a sweep of many tiny trials on local Ray stays flat in memory and leaks nothing.

Runs one paper-mode sweep of CNN-X over ``--trials`` seeds (one 1-epoch trial each, 32 px
synthetic images) through the public entry ``raybench.tune.sweep.run_sweep``. A thread in the
driver watches the runs table grow and, every ``--every`` finished trials, samples the driver's
RSS and the RSS of Ray's worker processes (``ray::*``: the trial processes). At the end it counts
placement groups and actors still alive (Ray's State API) and the rows and trial files of each
results table. Prints one line per sample and a JSON summary (also written to ``--json``).

    python benchmarks/soak.py --trials 2000 --every 200 --num-cpus 4 --json soak.json

Targets (issue 13): RSS growth < 10 % from trial 20 to the last sample, no placement group or
actor left alive, exactly one runs row and one file per table for each trial. Issue 23: driver
RSS growth from trial 200 to trial 2,000 at most 256 MiB; each sample also gives the mean
duration of Tune's experiment checkpoints since the previous sample (``checkpoint_s``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size of a process in MiB, from /proc (psutil is not installed here)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def soak_spec(root: str, trials: int, cache: str) -> Any:
    """The sweep: cnnx x ``trials`` seeds, paper mode, 1 epoch, 32 px, no CAMs."""
    from raybench.config import load_spec

    return load_spec(None, [
        "name=soak", f"results={root}", "model.name=cnnx", "model.image_size=32",
        "data.synthetic.per_class=8", "data.synthetic.size=32", "data.test_fraction=0.25",
        f"data.cache_dir={cache}", "train.epochs=1", "train.batch_size=4", "train.num_threads=1",
        "sweep.mode=paper", "sweep.models=[cnnx]", "sweep.asha=false",
        f"sweep.seeds=[{', '.join(str(i) for i in range(trials))}]", "cam.enabled=false"])


def ray_worker_rss() -> tuple[int, float, float]:
    """(count, max MiB, total MiB) of this machine's Ray worker processes (``ray::...``)."""
    sizes = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmd = handle.read().split(b"\0")[0]
            if cmd.startswith(b"ray::"):
                sizes.append(rss_mib(entry))
        except OSError:  # the process ended meanwhile
            continue
    return len(sizes), max(sizes, default=0.0), sum(sizes)


class Sampler(threading.Thread):
    """Samples RSS each time another ``every`` trials have a runs-table file."""

    def __init__(self, runs_dir: Path, every: int) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.runs_dir, self.every = runs_dir, every
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.ckpt_seen = 0

    def finished(self) -> int:
        return len(list(self.runs_dir.glob("*.parquet"))) if self.runs_dir.is_dir() else 0

    def sample(self, done: int) -> None:
        count, peak, total = ray_worker_rss()
        recent, self.ckpt_seen = CHECKPOINTS[self.ckpt_seen:], len(CHECKPOINTS)
        row = {"trials": done, "driver_rss_mib": round(rss_mib(), 1),
               "workers": count, "worker_rss_max_mib": round(peak, 1),
               "worker_rss_total_mib": round(total, 1), "load_1m": round(os.getloadavg()[0], 2),
               "t_s": round(time.monotonic() - START, 1),
               "checkpoint_s": round(sum(recent) / len(recent), 4) if recent else None}
        self.samples.append(row)
        print(json.dumps(row), flush=True)

    def run(self) -> None:
        mark = self.every
        while not self.stop.is_set():
            done = self.finished()
            if done >= mark:
                self.sample(done)
                mark = (done // self.every + 1) * self.every
            self.stop.wait(0.5)


#: Durations of Tune's experiment checkpoints (see :func:`time_checkpoints`).
CHECKPOINTS: list[float] = []


def time_checkpoints() -> None:
    """Times each experiment checkpoint Tune writes (Ray 2.60: ``TuneController.save_to_dir``)."""
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController.save_to_dir

    def timed(self: Any) -> None:
        t0 = time.perf_counter()
        try:
            original(self)
        finally:
            CHECKPOINTS.append(time.perf_counter() - t0)

    TuneController.save_to_dir = timed  # type: ignore[method-assign]


def leaks() -> dict[str, int]:
    """Placement groups not removed and actors alive, from Ray's State API."""
    import ray
    from ray.util.state import list_actors, list_placement_groups

    # This session's dashboard, by address: other Ray instances may run on the same machine.
    address = "http://" + ray._private.worker._global_node.address_info["webui_url"]
    groups = [g for g in list_placement_groups(address=address, limit=10_000)
              if g.state != "REMOVED"]
    actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=10_000)
    return {"placement_groups_alive": len(groups), "actors_alive": len(actors)}


def table_counts(root: str) -> dict[str, dict[str, int]]:
    """Rows, distinct trials and files of each table of the soak sweep."""
    from raybench import schema as S
    from raybench.results import load

    res = load(root, "soak")
    out = {}
    for table in S.TABLES:
        frame = res.table(table)
        files = len(list((Path(root) / "soak" / table).glob("*.parquet")))
        out[table] = {"rows": len(frame), "trials": int(frame[S.TRIAL_ID].nunique()),
                      "files": files}
    return out


def growth(samples: list[dict[str, Any]], key: str) -> float:
    """Relative change of ``key`` from the first sample to the last."""
    first, last = samples[0][key], samples[-1][key]
    return (last - first) / first if first else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--every", type=int, default=20, help="sample every N finished trials")
    parser.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of local Ray")
    parser.add_argument("--json", help="also write the summary here")
    args = parser.parse_args()
    from raybench.tune.sweep import run_sweep

    time_checkpoints()
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "runs")
        spec = soak_spec(root, args.trials, os.path.join(tmp, "cache"))
        sampler = Sampler(Path(root) / "soak" / "runs", args.every)
        sampler.start()
        summary = run_sweep(spec, num_cpus=args.num_cpus, overwrite=True)
        sampler.stop.set()
        sampler.join()
        time.sleep(2)  # let Ray reap the last trial's actors before counting
        report = {"trials": args.trials, "wall_s": round(time.monotonic() - START, 1),
                  "statuses": sorted({row["status"] for row in summary}),
                  "samples": sampler.samples, **leaks(), "tables": table_counts(root),
                  "driver_rss_growth": round(growth(sampler.samples, "driver_rss_mib"), 4),
                  "worker_rss_max_growth": round(growth(sampler.samples, "worker_rss_max_mib"), 4),
                  "cpu_count": os.cpu_count()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


START = time.monotonic()

if __name__ == "__main__":
    main()
