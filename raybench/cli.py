"""``raybench <command>``: each command parses its arguments, calls one library function, prints.

User errors (:class:`raybench.errors.RaybenchError`) become one line on stderr and exit code 2.
Building the parser imports no pandas, torch or Ray: choices come from torch- and pandas-free
tables (:mod:`raybench.catalog`, :mod:`raybench.results.choices`), and each command imports
its library code in ``run``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

from raybench import schema as S
from raybench.catalog.importers import cli_kinds
from raybench.errors import RaybenchError
from raybench.results.choices import FORMATS, INTERVALS, QUERIES

log = logging.getLogger(__name__)
#: What ``raybench --help`` says first (plain text: argparse prints it as it is).
DESCRIPTION = ("raybench COMMAND: train, sweep and compare CNNs on chest X-rays; each command "
               "parses its arguments, calls one library function and prints.")
#: Package data, so an installed wheel finds it (``jobs/demo.yaml`` in a checkout links to it).
DEMO_SPEC = Path(__file__).resolve().parent / "specs" / "demo.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other user error
        self.exit(2, f"raybench: error: {message} (see '{self.prog} --help')\n")


def _print_outcome(outcome) -> None:
    m = outcome.result.test.metrics
    print(f"\n{outcome.run_row[S.MODEL]} ({outcome.trial_id}): test accuracy {m.accuracy:.3f}, "
          f"balanced accuracy {m.balanced_accuracy:.3f}, macro AUC {m.macro_auc:.3f}, "
          f"n={m.n}, {outcome.run_row[S.TRAIN_IMAGES_PER_S]:.1f} train images/s")
    print(m.table().to_string(float_format=lambda v: f"{v:.3f}"))


def _print_summary(summary: Sequence[dict]) -> None:
    for row in summary:
        params = ", ".join(f"{k}={row[k]:.3g}" for k in S.SEARCHED if row.get(k) is not None)
        print(f"{row[S.TRIAL_ID]:<40} {row[S.STATUS]:<10} {params}")


def _spec(args: argparse.Namespace):
    """The spec of ``--config`` with ``--set`` overrides and ``--results``."""
    from raybench.config import load_spec

    return load_spec(args.config,
                     list(args.set) + ([f"results={args.results}"] if args.results else []))


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (e.g. ``--num-cpus``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text[:40]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_set(p: argparse.ArgumentParser, what: str = "a spec key") -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override {what}, e.g. train.lr=1e-3 (repeatable)")


def _add_skip_corrupt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out unreadable result files with a warning instead of failing")


def _add_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep (starts it when it does not exist yet)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing sweep of the same name and start again")


def _add_root(p: argparse.ArgumentParser, sweep_required: bool = True) -> None:
    p.add_argument("uri", help="results root: a path or s3://bucket/prefix")
    if sweep_required:
        p.add_argument("--sweep", required=True)


class Command:
    """One ``raybench`` subcommand: its name and help, its arguments, and what it runs.

    ``run`` returns the exit code (``None`` = 0); a :class:`RaybenchError` it raises becomes
    one line on stderr and the error's own exit code.
    """

    name = ""
    help = ""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """Adds this command's arguments to its sub-parser."""

    def run(self, args: argparse.Namespace) -> Optional[int]:
        """Runs the command."""
        raise NotImplementedError


class Models(Command):
    name, help = "models", "list the model zoo"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print a JSON list")
        p.add_argument("--search", metavar="PATTERN",
                       help="list the timm / torchvision models matching a shell pattern "
                            "('convnext*', 'timm.efficientnet_b*') instead of the paper's")
        p.add_argument("--limit", type=int, default=50, help="--search: at most this many")

    def run(self, args: argparse.Namespace) -> None:
        from raybench.models.listing import model_table

        rows = model_table(search=args.search, limit=args.limit)
        if args.search is not None and not rows:
            raise RaybenchError(f"models --search {args.search!r}: no timm or torchvision model "
                              "matches")
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        wide = max([20] + [len(r["name"]) for r in rows])
        print(f"{'name':<{wide}} {'paper name':<20} {S.PARAMS:>12} {'input':>5}  {'source':<11} "
              "cam layer, options")
        for r in rows:
            options = ", ".join(f"{k}={v}" for k, v in r["options"].items())
            print(f"{r['name']:<{wide}} {r['paper_name']:<20} {r[S.PARAMS]:>12,} {r['input_size']:>5}  "
                  f"{r['source']:<11} {r['cam_layer']} ({r['cam_method']}){'; ' + options if options else ''}")


class Train(Command):
    name, help = "train", "train one model from a spec file"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="spec YAML (default: built-in defaults)")
        _add_set(p)
        p.add_argument("--results", help="results root: a path or s3://bucket/prefix (default ./runs)")

    def run(self, args: argparse.Namespace) -> None:
        spec = _spec(args)  # before torch and Ray are imported: a spec error costs under 2 s
        from raybench.config import with_absolute_paths
        from raybench.predict import warn_if_long
        from raybench.storage import check_writable

        # hours on this machine's CPUs: said before it starts; an unusable results root first
        # (the estimate reads the data: a bad root must fail before that, in seconds; a
        # missing manifest fails there, before torch is imported)
        check_writable(spec.results)
        warn_if_long(spec, sweep=False)
        from raybench.engine.run import run_training

        # Ray tasks (the decoded cache's build on a connected Ray) run in other folders
        outcome = run_training(with_absolute_paths(spec))
        _print_outcome(outcome)
        print(f"results: {spec.results}/{spec.name}")


class Sweep(Command):
    name, help = "sweep", "run a study on Ray Tune (paper grid or Optuna search)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add_sweep_spec(p, "results root: a path or s3://bucket/prefix",
                        "Ray cluster address (default: RAY_ADDRESS or local Ray)")
        _add_resume(p)
        p.add_argument("--num-cpus", type=_positive_int, help="logical CPUs of the embedded local Ray")
        p.add_argument("--retry-crashed", action="store_true",
                       help="with --resume: retry trials that crashed more often than "
                            "sweep.max_retries, with as many retries again")
        _add_gpu_args(p, "logical GPUs of the embedded local Ray")

    def run(self, args: argparse.Namespace) -> None:
        if args.retry_crashed and not args.resume:
            raise RaybenchError("--retry-crashed continues a sweep: give it with --resume")
        spec = _spec(args)  # before torch and Ray are imported
        from raybench.errors import SweepError
        from raybench.tracking import check_tracking
        from raybench.tune.sweep import RayOptions, run_sweep

        check_tracking(spec)  # an unusable MLflow server fails the sweep at once, not its trials
        session = _Session(spec, args.resume)
        try:
            summary = run_sweep(spec, resume=args.resume, overwrite=args.overwrite,
                                ray_opts=RayOptions(args.address, args.num_cpus, args.num_gpus,
                                                    args.probe),
                                retry_crashed=args.retry_crashed)
        except SweepError as exc:  # the trials that did run are still worth a table
            _print_summary(session.own(exc.summary))
            raise
        _print_summary(session.own(summary))
        session.print_earlier()
        print(f"results: {spec.results}/{spec.name}")


class _Session:
    """Which trials of a sweep's summary ran in this session: on ``--resume``, Tune restores
    the trials of its last snapshot, and those that had already ended end again without
    training; the closing summary leaves them out and counts them instead."""

    def __init__(self, spec: Any, resume: bool) -> None:
        from datetime import datetime, timezone

        from raybench.store import ResultStore

        self.spec, self.store = spec, ResultStore(spec.results)
        self.since = datetime.now(timezone.utc)
        self.had: set[str] = set()  # trial ids with a run row before this session (a listing, no reads)
        if resume and self.store.exists(spec.name, S.RUNS_TABLE):
            self.had = {n.removesuffix(".parquet")
                        for n in self.store.file_names(spec.name, S.RUNS_TABLE, ".parquet")}
        self.shown = 0

    def own(self, summary: Sequence[dict]) -> list[dict]:
        from raybench.tune.outcome import earlier_sessions

        earlier = earlier_sessions(self.store, self.spec.name, summary, self.had, self.since)
        rows = [row for row in summary if row[S.TRIAL_ID] not in earlier]
        self.shown = len(rows)
        return rows

    def print_earlier(self) -> None:
        if self.had and not self.shown:
            print(f"sweep {self.spec.name} had already finished: its {len(self.had)} trial(s) "
                  "ended in earlier sessions; nothing left to run")


def _add_sweep_spec(p: argparse.ArgumentParser, results: str, address: str) -> None:
    """The options that name a sweep spec and where it runs: ``sweep`` and ``plan``."""
    p.add_argument("--config", required=True, help="sweep spec YAML (see jobs/)")
    _add_set(p)
    p.add_argument("--results", help=results)
    p.add_argument("--address", help=address)


def _add_gpu_args(p: argparse.ArgumentParser, gpus: str) -> None:
    p.add_argument("--num-gpus", type=_positive_int, help=gpus)
    p.add_argument("--probe", metavar="FILE",
                   help="a recorded GPU probe file (<results>/_probes/probes.json of another "
                   "run) used instead of probing; workloads it lacks are probed")


class Plan(Command):
    name, help = "plan", "a sweep's GPU shares, predicted wall time and GPU-hours on N GPUs"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add_sweep_spec(p, "results root (its probe cache): a path or s3://...",
                        "Ray cluster to probe on (default: RAY_ADDRESS or local Ray); not "
                        "needed with --probe")
        _add_gpu_args(p, "GPUs to plan for (default: the cluster's; 1 with --probe)")

    def run(self, args: argparse.Namespace) -> None:
        spec = _spec(args)
        from raybench.predict import render
        from raybench.tune.packing import plan_sweep

        pred = plan_sweep(spec, args.num_gpus, args.probe, args.address)
        print("\n".join(render(pred)))


class Demo(Command):
    name, help = "demo", "run the demo job on synthetic data"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--results", default="./runs", help="results root (default ./runs)")
        p.add_argument("--config", help="demo spec (default: the packaged jobs/demo.yaml)")
        _add_set(p, "a key of the demo spec")
        p.add_argument("--num-cpus", type=_positive_int, help="logical CPUs of the embedded local Ray")

    def run(self, args: argparse.Namespace) -> None:
        from raybench.demo import LOOK_AT, run_demo

        summary, report = run_demo(args.results, args.config or DEMO_SPEC,
                                   num_cpus=args.num_cpus, overrides=args.set)
        _print_summary(summary)
        print(f"\nresults: {args.results}\nreport:  {report}\n\nIn the report, look at:")
        print("\n".join(f"  {i}. {text}" for i, text in enumerate(LOOK_AT, 1)))


class ResultsTable(Command):
    name, help = "results", "print a results table (runs, metrics, paper, significance, findings)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add_root(p, sweep_required=False)
        p.add_argument("--sweep", help="one sweep (default: every sweep under the root)")
        p.add_argument("--table", choices=QUERIES, default=QUERIES[0])
        p.add_argument("--scenario", help="scenario of the paper table (when there are several)")
        p.add_argument("--baseline", help="significance: the model every other is compared with "
                       "(default: every pair)")
        p.add_argument("--split", choices=["test", "val"], default="test",
                       help="significance: the split whose predictions are compared")
        p.add_argument("--format", choices=FORMATS, default=FORMATS[0])
        p.add_argument("--interval", choices=INTERVALS, default=INTERVALS[0],
                       help="paper / significance: intervals across seeds from the two-level "
                       "bootstrap (seeds x patients) with the seed variance pooled across the "
                       "study, the same unpooled, or a Student t over seeds")
        _add_skip_corrupt(p)

    def run(self, args: argparse.Namespace) -> None:
        from raybench.results.output import query, render

        frame = query(args.uri, args.sweep, args.table, args.scenario, args.baseline, args.split,
                      skip_corrupt=args.skip_corrupt, interval=args.interval)
        print(render(frame, args.format))


class Report(Command):
    name, help = "report", "write report.md + self-contained report.html"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add_root(p)
        p.add_argument("--out", required=True, help="output folder")
        _add_skip_corrupt(p)

    def run(self, args: argparse.Namespace) -> None:
        from raybench.report import write_report

        page = write_report(args.uri, args.sweep, args.out, skip_corrupt=args.skip_corrupt)
        print(f"wrote {page} and {page.with_name('report.md')}")


class Cam(Command):
    name, help = "cam", "render a trial's stored CAMs as PNG overlays"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add_root(p)
        p.add_argument("--trial", required=True, help="trial id (see raybench results)")
        p.add_argument("--images", nargs="+", metavar="IMAGE_ID", help="default: every stored image")
        p.add_argument("--out", required=True, help="output folder for <image_id>.png")
        _add_skip_corrupt(p)

    def run(self, args: argparse.Namespace) -> None:
        from raybench.cam.render import render_overlays
        from raybench.store import ResultStore

        store = ResultStore(args.uri, skip_corrupt=args.skip_corrupt)
        store.check_root()
        cams = store.read_cams_or_none(args.sweep, args.trial)
        if cams is None:
            log.warning("no overlays written: the CAM file of %s is corrupt", args.trial)
            return
        for row in render_overlays(cams, args.out, args.images):
            print(f"{row[S.IMAGE_ID]:<40} {row[S.LABEL]:<10} pred {row[S.PREDICTED]:<10} "
                  f"{row['path']}")


class Dashboard(Command):
    name, help = "dashboard", "optuna-dashboard on a sweep's stored Optuna studies"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add_root(p)
        p.add_argument("--host", default="127.0.0.1",
                       help="interface to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=8080,
                       help="TCP port (default 8080; 0: a free one)")

    def run(self, args: argparse.Namespace) -> int:
        import time

        from raybench.dashboard import DashboardOptions, running_dashboard

        # Requests are served in the dashboard's thread, so Ctrl-C always lands here: in the
        # thread that serves, one arriving mid-request was swallowed by wsgiref's handler
        # (a bare except), and the server went on serving.
        with running_dashboard(DashboardOptions(args.uri, args.sweep, args.host,
                                                args.port)) as board:
            names = ", ".join(board.studies) or "none yet"
            print(f"optuna-dashboard for sweep {args.sweep} ({len(board.studies)} studies: "
                  f"{names})")
            print(board.url, flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass  # Ctrl-C is how a user stops a server: not an error
        return 0


class Submit(Command):
    name, help = "submit", "submit a sweep to a Ray cluster (Jobs API); query a job"
    QUERIES = ("status", "logs", "stop")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--address", help="Ray dashboard URL, e.g. http://HEAD:8265 "
                       "(default: RAY_API_SERVER_ADDRESS or RAY_ADDRESS)")
        p.add_argument("--config", help="sweep spec YAML (see jobs/)")
        _add_set(p, "a spec key in the job")
        p.add_argument("--results", help="results root of the job, e.g. s3://bucket/prefix")
        _add_resume(p)
        p.add_argument("--wait", action="store_true",
                       help="follow the logs to the end; exit 0 if the job succeeded, else 1")
        p.add_argument("--runtime", choices=["workdir", "installed"], default="workdir",
                       help="workdir: upload this checkout; installed: the image has raybench")
        p.add_argument("--working-dir", help="folder to upload (default: the checkout of --config)")
        p.add_argument("--job-id", help="submission id (default: raybench-<sweep>-<random>)")
        p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                       help="non-secret environment variable for the job (repeatable)")
        p.add_argument("--status", metavar="JOB_ID", help="print a job's status")
        p.add_argument("--logs", metavar="JOB_ID", help="print a job's logs")
        p.add_argument("--stop", metavar="JOB_ID", help="stop a job")

    def run(self, args: argparse.Namespace) -> int:
        from raybench import submit

        ops = [o for o in self.QUERIES if getattr(args, o)]
        if bool(args.config) == bool(ops):
            raise RaybenchError("submit: pass --config SPEC to submit a sweep, or one of "
                                "--status / --logs / --stop JOB_ID")
        if ops:
            self._query(submit.JobsClient(args.address), ops[0], getattr(args, ops[0]))
            return 0
        opts = submit.SubmitOptions(
            address=args.address, config=args.config, overrides=tuple(args.set),
            results=args.results, resume=args.resume, overwrite=args.overwrite,
            runtime=args.runtime, working_dir=args.working_dir, job_id=args.job_id,
            env=tuple(args.env))
        request = submit.job_request(opts)  # a bad spec fails here, before any connection
        client = submit.JobsClient(args.address)
        job_id = submit.submit(client, request)
        print(job_id, flush=True)
        return self._follow(client, job_id) if args.wait else 0

    @staticmethod
    def _query(client, op: str, job_id: str) -> None:
        from raybench import submit

        if op == "status":
            state, message = submit.status(client, job_id)
            print(f"{job_id} {state}" + (f": {message}" if message else ""))
        elif op == "logs":
            print(submit.logs(client, job_id), end="")
        else:
            done = submit.stop(client, job_id)
            print(f"{job_id}: stop requested" if done else f"{job_id}: already finished")

    @staticmethod
    def _follow(client, job_id: str) -> int:
        from raybench import submit

        try:
            state = submit.follow(client, job_id, lambda text: print(text, end="", flush=True))
        except KeyboardInterrupt:
            print(f"raybench: stopped following; job {job_id} keeps running "
                  f"(raybench submit --stop {job_id})", file=sys.stderr)
            raise
        print(f"job {job_id} {state}", file=sys.stderr)
        return submit.exit_code(state)


class Bench(Command):
    name, help = "bench", "throughput: raybench vs plain PyTorch, data cache, trials, sweeps"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print the full report as JSON")
        p.add_argument("--quick", action="store_true",
                       help="a smoke run of every default part (about 1.5 min on 2 idle cores)")
        p.add_argument("--only", metavar="PARTS",
                       help="comma-separated subset of train,cache,trials,cam,results; "
                            "sweep, data (only when named)")
        p.add_argument("--data", metavar="DIR",
                       help="images of the cache benchmark: a manifest (.parquet) or a folder "
                            "of images (default: generated synthetic images)")

    def run(self, args: argparse.Namespace) -> Optional[int]:
        from raybench.bench import BenchOptions, format_report, missed_targets, run_bench

        opts = BenchOptions.quick_options() if args.quick else BenchOptions()
        if args.only:
            opts = dataclasses.replace(opts, sections=tuple(args.only.split(",")))
        if args.data:
            opts = dataclasses.replace(opts, data=args.data)
        report = run_bench(opts)
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        missed = missed_targets(report)
        if missed:  # a benchmark that misses its target is a failed check, for CI too
            sys.stderr.write(f"raybench: bench: {len(missed)} target(s) missed: "
                             f"{', '.join(missed)}\n")
            return 1
        return None


class Synth(Command):
    name, help = "synth", "write a synthetic chest X-ray set with a manifest"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("out")
        p.add_argument("--per-class", type=int, default=40)
        p.add_argument("--size", type=int, default=64)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--marker-leak", type=float, default=0.0,
                       help="probability of a class-correlated text marker outside the lungs")

    def run(self, args: argparse.Namespace) -> None:
        from raybench.data.synth import synthesize

        df = synthesize(Path(args.out), per_class=args.per_class, size=args.size,
                        seed=args.seed, marker_leak=args.marker_leak)
        print(f"wrote {len(df)} images and {Path(args.out) / 'manifest.parquet'}")


class Import(Command):
    name, help = "import", "build a manifest from a dataset on disk (--list: the kinds)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("kind", nargs="?", choices=cli_kinds(), metavar="KIND",
                       help=f"one of {', '.join(cli_kinds())} (--list: the files each expects)")
        p.add_argument("src", nargs="?", help="dataset folder (metadata-csv: the CSV file)")
        p.add_argument("--list", action="store_true",
                       help="print every kind with the files it expects, then exit")
        p.add_argument("--out", help="manifest Parquet to write (required)")
        p.add_argument("--append", action="store_true", help="merge into --out when it exists")
        p.add_argument("--source", help="one source value for every row (default: per kind; "
                       "metadata-csv: the CSV's source column, else its folder name)")
        p.add_argument("--source-col", help="metadata-csv: column of each row's source "
                       "(hospital); default: a column named 'source' when present")
        p.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail")
        p.add_argument("--images", help="image folder (covidx, metadata-csv; default: next to SRC)")
        p.add_argument("--file-col", help="metadata-csv: column of file names")
        p.add_argument("--label-col", help="metadata-csv: column of findings / labels")
        p.add_argument("--patient-col", help="metadata-csv: column of patient ids")
        p.add_argument("--split-col", help="metadata-csv: column of train/val/test")
        p.add_argument("--label", help="one label for every row (a CSV without a finding column)")
        p.add_argument("--label-map", action="append", default=[], metavar="RAW=LABEL|RULE.yaml",
                       help="map a raw label value or finding to a label, e.g. 'COVID-19=covid19' "
                       "(repeatable; order = precedence for multi-label sets), or a YAML rule "
                       "file 'class: [finding, ...]'")
        p.add_argument("--unmapped", choices=["fail", "skip"], default="fail",
                       help="rows whose label value is not mapped: fail, or leave them out")
        p.add_argument("--views", metavar="V1,V2",
                       help="keep only these views, e.g. PA,AP (frontal); default: all")
        p.add_argument("--uncertain", choices=["ignore", "zeros", "ones"],
                       help="chexpert, mimic-cxr-jpg (required there): uncertain findings (-1.0)")
        p.add_argument("--address", help="Ray cluster to hash the files on "
                       "(default: RAY_ADDRESS or local Ray)")

    def run(self, args: argparse.Namespace) -> None:
        from raybench.catalog.importers import describe_kinds
        from raybench.data.importers import (
            ImportOptions, import_dataset, parse_label_map, write_import,
        )

        if args.list:
            print(describe_kinds())
            return
        if not (args.kind and args.src and args.out):
            raise RaybenchError("data import: KIND, SRC and --out are required (see "
                                "'raybench data import --list')")
        opts = ImportOptions(
            source=args.source, source_col=args.source_col, on_bad_image=args.on_bad_image,
            images=args.images, file_col=args.file_col, label_col=args.label_col,
            patient_col=args.patient_col, split_col=args.split_col, label=args.label,
            label_map=parse_label_map(args.label_map), unmapped=args.unmapped,
            views=tuple(v.strip() for v in (args.views or "").split(",") if v.strip()),
            uncertain=args.uncertain, address=args.address)
        result = import_dataset(args.kind, args.src, opts)
        df = write_import(result, args.out, append=args.append)
        counts = ", ".join(f"{k} {v}" for k, v in df[S.LABEL].value_counts().sort_index().items())
        skipped = f"; skipped {len(result.skipped)} bad image(s), see {args.out}.skipped.csv" \
            if result.skipped else ""
        dropped = "; left out " + ", ".join(f"{v} ({k})" for k, v in result.dropped.items()) \
            if result.dropped else ""
        print(f"wrote {args.out}: {len(df)} images ({counts}){skipped}{dropped}")


class Audit(Command):
    name, help = "audit", "duplicates, leakage, unreadable files, source confounds"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        from raybench.config.spec import DEFAULT_CACHE_DIR

        p.add_argument("manifest")
        p.add_argument("--against", help="a second manifest (e.g. the test set) to check overlap with")
        p.add_argument("--json", action="store_true", help="print the full report as JSON")
        p.add_argument("--near", type=int, default=None, metavar="BITS",
                       help="near-duplicate threshold: Hamming distance of 1024-bit dHashes "
                       "(default 112, chosen from measured distances on real X-rays)")
        p.add_argument("--strict", action="store_true",
                       help="exit 1 when duplicates cross splits or manifests, labels conflict, "
                       "patients leak or a label is confounded with source / image properties")
        p.add_argument("--address", help="Ray cluster to probe the files on "
                       "(default: RAY_ADDRESS or local Ray)")
        p.add_argument("--probe", action="store_true",
                       help="also train a quick classifier to tell each image's source from its "
                       "pixels (patient-disjoint folds) and report its AUC")
        p.add_argument("--probe-size", type=int, default=224, metavar="PX",
                       help="probe: side of the decoded images, as the models see them")
        p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR,
                       help="probe: the decoded-image cache (data.cache_dir)")

    def run(self, args: argparse.Namespace) -> int:
        from raybench.data.audit import audit_manifest, format_report, strict_failures

        report = audit_manifest(args.manifest, against=args.against, near_threshold=args.near,
                                address=args.address)
        probe = None
        if args.probe:
            from raybench.data.probe import format_probe, probe_manifest

            probe = probe_manifest(args.manifest, args.probe_size, args.cache_dir)
            report["source_probe"] = probe.to_dict()
        text = format_report(report) + (f"\n{format_probe(probe)}" if probe else "")
        print(json.dumps(report, indent=2) if args.json else text)
        failures = strict_failures(report)
        if args.strict and failures:
            print(f"raybench: audit failed (--strict): {'; '.join(failures)}", file=sys.stderr)
            return 1
        return 0


#: ``raybench <name>``, in the order ``--help`` lists them.
COMMANDS: tuple[Command, ...] = (Models(), Train(), Sweep(), Plan(), Demo(), ResultsTable(),
                                 Report(), Cam(), Dashboard(), Submit(), Bench())
#: ``raybench data <name>``.
DATA_COMMANDS: tuple[Command, ...] = (Synth(), Import(), Audit())


def _add_commands(sub: Any, commands: Sequence[Command]) -> None:
    for command in commands:
        p = sub.add_parser(command.name, help=command.help)
        command.add_arguments(p)
        p.set_defaults(func=command.run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (built from :data:`COMMANDS`)."""
    parser = _Parser(prog="raybench", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_commands(sub, COMMANDS)
    data = sub.add_parser("data", help="datasets: synthetic generator, importers, audit")
    _add_commands(data.add_subparsers(dest="data_command", required=True, parser_class=_Parser),
                  DATA_COMMANDS)
    return parser


def _configure_logging(verbose: bool) -> None:
    """One stderr handler for every record; the ``raybench`` logger sets the level of all of
    raybench's modules (each logs under its own name, ``raybench.<module>``)."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("raybench").setLevel(level)
    for noisy in ("PIL", "matplotlib", "urllib3", "botocore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``raybench`` console script."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    func: Callable[[argparse.Namespace], Optional[int]] = args.func
    try:
        code = func(args)
    except RaybenchError as exc:  # one line per problem (a sweep: one per failed trial)
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"raybench: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.command == "sweep":  # the trials that finished are kept: say how to go on
            print("raybench: error: interrupted; continue with --resume", file=sys.stderr)
        else:
            print("raybench: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
