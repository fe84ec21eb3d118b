"""``raybench <command>``: each command parses its arguments, calls one library function, prints.

User errors (:class:`raybench.errors.RaybenchError`) become one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from raybench.errors import RaybenchError

log = logging.getLogger("raybench")
DEMO_SPEC = Path(__file__).resolve().parent.parent / "jobs" / "demo.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(2, f"raybench: error: {message} (see '{self.prog} --help')\n")


def _cmd_models(args: argparse.Namespace) -> None:
    from raybench.models.listing import model_table

    rows = model_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':<20} {'paper name':<20} {'params':>12} {'input':>5}  {'source':<11} cam layer")
    for r in rows:
        print(f"{r['name']:<20} {r['paper_name']:<20} {r['params']:>12,} {r['input_size']:>5}  "
              f"{r['source']:<11} {r['cam_layer']} ({r['cam_method']})")


def _print_outcome(outcome) -> None:
    m = outcome.result.test.metrics
    print(f"\n{outcome.run_row['model']} ({outcome.trial_id}): test accuracy {m.accuracy:.3f}, "
          f"balanced accuracy {m.balanced_accuracy:.3f}, macro AUC {m.macro_auc:.3f}, "
          f"n={m.n}, {outcome.run_row['train_images_per_s']:.1f} train images/s")
    print(m.table().to_string(float_format=lambda v: f"{v:.3f}"))


def _spec(args: argparse.Namespace):
    """The spec of ``--config`` with ``--set`` overrides and ``--results``."""
    from raybench.config import load_spec

    return load_spec(args.config,
                     list(args.set) + ([f"results={args.results}"] if args.results else []))


def _add_set(p: argparse.ArgumentParser, what: str = "a spec key") -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override {what}, e.g. train.lr=1e-3 (repeatable)")


def _add_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing sweep of the same name and start again")


def _cmd_train(args: argparse.Namespace) -> None:
    from raybench.engine.run import run_training

    spec = _spec(args)
    outcome = run_training(spec)
    _print_outcome(outcome)
    print(f"results: {spec.results}/{spec.name}")


def _cmd_sweep(args: argparse.Namespace) -> None:
    from raybench.errors import SweepError
    from raybench.tune.sweep import run_sweep

    spec = _spec(args)
    try:
        summary = run_sweep(spec, resume=args.resume, address=args.address,
                            num_cpus=args.num_cpus, overwrite=args.overwrite)
    except SweepError as exc:  # the trials that did run are still worth a table
        _print_summary(exc.summary)
        raise
    _print_summary(summary)
    print(f"results: {spec.results}/{spec.name}")


def _print_summary(summary: list[dict]) -> None:
    for row in summary:
        params = ", ".join(f"{k}={row[k]:.3g}" for k in ("lr", "batch_size", "cnnx_stride")
                           if row.get(k) is not None)
        print(f"{row['trial_id']:<40} {row['status']:<10} {params}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from raybench.demo import run_demo

    summary, report = run_demo(args.results, args.config or DEMO_SPEC, num_cpus=args.num_cpus,
                               overrides=args.set)
    _print_summary(summary)
    print(f"\nresults: {args.results}\nreport:  {report}")


def _cmd_synth(args: argparse.Namespace) -> None:
    from raybench.data.synth import synthesize

    df = synthesize(Path(args.out), per_class=args.per_class, size=args.size, seed=args.seed,
                    marker_leak=args.marker_leak)
    print(f"wrote {len(df)} images and {Path(args.out) / 'manifest.parquet'}")


def _cmd_import(args: argparse.Namespace) -> None:
    from raybench.data.importers import ImportOptions, import_dataset, parse_label_map, write_import

    opts = ImportOptions(
        source=args.source, on_bad_image=args.on_bad_image, images=args.images,
        file_col=args.file_col, label_col=args.label_col, patient_col=args.patient_col,
        split_col=args.split_col, label=args.label, label_map=parse_label_map(args.label_map),
        unmapped=args.unmapped)
    result = import_dataset(args.kind, args.src, opts)
    df = write_import(result, args.out, append=args.append)
    counts = ", ".join(f"{k} {v}" for k, v in df["label"].value_counts().sort_index().items())
    skipped = f"; skipped {len(result.skipped)} bad image(s), see {args.out}.skipped.csv" \
        if result.skipped else ""
    print(f"wrote {args.out}: {len(df)} images ({counts}){skipped}")


def _cmd_audit(args: argparse.Namespace) -> None:
    from raybench.data.audit import audit_manifest, format_report

    report = audit_manifest(args.manifest, against=args.against, near_threshold=args.near)
    print(json.dumps(report, indent=2) if args.json else format_report(report))


def _cmd_results(args: argparse.Namespace) -> None:
    from raybench.results import query, render

    print(render(query(args.uri, args.sweep, args.table, args.scenario), args.format))


def _cmd_bench(args: argparse.Namespace) -> None:
    from raybench.bench import BenchOptions, format_report, run_bench

    sections = tuple(args.only.split(",")) if args.only else None
    opts = BenchOptions.quick_options() if args.quick else BenchOptions()
    if sections:
        opts = dataclasses.replace(opts, sections=sections)
    report = run_bench(opts)
    print(json.dumps(report, indent=2) if args.json else format_report(report))


def _cmd_report(args: argparse.Namespace) -> None:
    from raybench.report import write_report

    page = write_report(args.uri, args.sweep, args.out)
    print(f"wrote {page} and {page.with_name('report.md')}")


def _cmd_cam(args: argparse.Namespace) -> None:
    from raybench.cam.render import render_overlays
    from raybench.store import ResultStore

    cams = ResultStore(args.uri).read_cams(args.sweep, args.trial)
    for row in render_overlays(cams, args.out, args.images):
        print(f"{row['image_id']:<40} {row['label']:<10} pred {row['predicted']:<10} {row['path']}")


def _submit_query(client, op: str, job_id: str) -> None:
    from raybench import submit

    if op == "status":
        state, message = submit.status(client, job_id)
        print(f"{job_id} {state}" + (f": {message}" if message else ""))
    elif op == "logs":
        print(submit.logs(client, job_id), end="")
    else:
        done = submit.stop(client, job_id)
        print(f"{job_id}: stop requested" if done else f"{job_id}: already finished")


def _cmd_submit(args: argparse.Namespace) -> int:
    from raybench import submit

    ops = [o for o in ("status", "logs", "stop") if getattr(args, o)]
    if bool(args.config) == bool(ops):
        raise RaybenchError("submit: pass --config SPEC to submit a sweep, or one of "
                            "--status / --logs / --stop JOB_ID")
    if ops:
        _submit_query(submit.JobsClient(args.address), ops[0], getattr(args, ops[0]))
        return 0
    opts = submit.SubmitOptions(
        address=args.address, config=args.config, overrides=tuple(args.set),
        results=args.results, resume=args.resume, overwrite=args.overwrite, runtime=args.runtime,
        working_dir=args.working_dir, job_id=args.job_id, env=tuple(args.env))
    request = submit.job_request(opts)  # a bad spec fails here, before any connection
    client = submit.JobsClient(args.address)
    job_id = submit.submit(client, request)
    print(job_id, flush=True)
    if not args.wait:
        return 0
    try:
        state = submit.follow(client, job_id, lambda text: print(text, end="", flush=True))
    except KeyboardInterrupt:
        print(f"raybench: stopped following; job {job_id} keeps running "
              f"(raybench submit --stop {job_id})", file=sys.stderr)
        raise
    print(f"job {job_id} {state}", file=sys.stderr)
    return submit.exit_code(state)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = _Parser(prog="raybench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("models", help="list the model zoo")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("train", help="train one model from a spec file")
    p.add_argument("--config", help="spec YAML (default: built-in defaults)")
    _add_set(p)
    p.add_argument("--results", help="results root: a path or s3://bucket/prefix (default ./runs)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="run a study on Ray Tune (paper grid or Optuna search)")
    p.add_argument("--config", required=True, help="sweep spec YAML (see jobs/)")
    _add_set(p)
    p.add_argument("--results", help="results root: a path or s3://bucket/prefix")
    _add_resume(p)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local Ray)")
    p.add_argument("--num-cpus", type=int, help="logical CPUs of the embedded local Ray")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("demo", help="run the demo job on synthetic data")
    p.add_argument("--results", default="./runs", help="results root (default ./runs)")
    p.add_argument("--config", help="demo spec (default: jobs/demo.yaml)")
    _add_set(p, "a key of the demo spec")
    p.add_argument("--num-cpus", type=int, help="logical CPUs of the embedded local Ray")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("results", help="print a results table (runs, metrics, paper)")
    p.add_argument("uri", help="results root: a path or s3://bucket/prefix")
    p.add_argument("--sweep", help="one sweep (default: every sweep under the root)")
    p.add_argument("--table", choices=["runs", "metrics", "paper"], default="runs")
    p.add_argument("--scenario", help="scenario of the paper table (when there are several)")
    p.add_argument("--format", choices=["table", "csv", "json", "markdown"], default="table")
    p.set_defaults(func=_cmd_results)

    p = sub.add_parser("report", help="write report.md + self-contained report.html")
    p.add_argument("uri", help="results root: a path or s3://bucket/prefix")
    p.add_argument("--sweep", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("cam", help="render a trial's stored CAMs as PNG overlays")
    p.add_argument("uri", help="results root: a path or s3://bucket/prefix")
    p.add_argument("--sweep", required=True)
    p.add_argument("--trial", required=True, help="trial id (see raybench results)")
    p.add_argument("--images", nargs="+", metavar="IMAGE_ID", help="default: every stored image")
    p.add_argument("--out", required=True, help="output folder for <image_id>.png")
    p.set_defaults(func=_cmd_cam)

    p = sub.add_parser("submit", help="submit a sweep to a Ray cluster (Jobs API); query a job")
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
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("bench", help="throughput: raybench vs plain PyTorch, data cache, trials")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--quick", action="store_true", help="a smoke run of every part (~1 min)")
    p.add_argument("--only", metavar="PARTS",
                   help="comma-separated subset of train,cache,trials,cam,results; sweep (only when named)")
    p.set_defaults(func=_cmd_bench)

    data = sub.add_parser("data", help="datasets: synthetic generator, importers")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    p = dsub.add_parser("synth", help="write a synthetic chest X-ray set with a manifest")
    p.add_argument("out")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--marker-leak", type=float, default=0.0,
                   help="probability of a class-correlated text marker outside the lungs")
    p.set_defaults(func=_cmd_synth)
    p = dsub.add_parser("import", help="build a manifest from a dataset on disk")
    p.add_argument("kind", choices=["folder", "kermany", "covidx", "metadata-csv"],
                   help="folder: one sub-folder per class; kermany: Kaggle chest_xray; covidx: "
                   "label files + image folders; metadata-csv: a CSV of file, finding, patient")
    p.add_argument("src", help="dataset folder (metadata-csv: the CSV file)")
    p.add_argument("--out", required=True, help="manifest Parquet to write")
    p.add_argument("--append", action="store_true", help="merge into --out when it exists")
    p.add_argument("--source", help="value of the source column (default: per kind)")
    p.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail")
    p.add_argument("--images", help="image folder (covidx, metadata-csv; default: next to SRC)")
    p.add_argument("--file-col", help="metadata-csv: column of file names")
    p.add_argument("--label-col", help="metadata-csv: column of findings / labels")
    p.add_argument("--patient-col", help="metadata-csv: column of patient ids")
    p.add_argument("--split-col", help="metadata-csv: column of train/val/test")
    p.add_argument("--label", help="one label for every row (a CSV without a finding column)")
    p.add_argument("--label-map", action="append", default=[], metavar="RAW=LABEL",
                   help="map a raw label value, e.g. 'COVID-19=covid19' (repeatable)")
    p.add_argument("--unmapped", choices=["fail", "skip"], default="fail",
                   help="rows whose label value is not mapped: fail, or leave them out")
    p.set_defaults(func=_cmd_import)
    p = dsub.add_parser("audit", help="duplicates, leakage, unreadable files, source confounds")
    p.add_argument("manifest")
    p.add_argument("--against", help="a second manifest (e.g. the test set) to check overlap with")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--near", type=int, default=12, metavar="BITS",
                   help="near-duplicate threshold: Hamming distance of 256-bit dHashes")
    p.set_defaults(func=_cmd_audit)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``raybench`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("PIL", "matplotlib", "urllib3", "botocore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        code = func(args)
    except RaybenchError as exc:  # one line per problem (a sweep: one per failed trial)
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"raybench: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        hint = "; continue with --resume" if args.command == "sweep" else ""
        print(f"raybench: error: interrupted{hint}", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
