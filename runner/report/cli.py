"""`qrun-report`: the comparison table, plots and a recommendation, read back from MLflow.

qrun-report                                   # the latest sweep: Markdown tables (+ quality.md) + CSV + PNGs
qrun-report --sweep <parent run id> --out reports/
qrun-report --all                             # the newest finished run of every job
qrun-report recommend --hardware rtx3090x2 --max-latency-p95 3 --min-throughput 100
qrun-report recommend --limit quality/kld_p99=0.05 --limit size/bits_per_weight=5
qrun-report recommend --deployment cpu_chat_4users   # a scenario (conf/deployment/), judged like with like
"""

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Dict, List, Optional

from runner import metrics as M
from runner.errors import UserError
from runner.report import floor, ties
from runner.report.columns import REPORT, cells, used, with_floor, with_tasks
from runner.report.data import Row, load_rows
from runner.report.quality_tables import quality_markdown
from runner.report.recommend import Constraints, recommend


def markdown(rows: List[Row]) -> str:
    """Best quality first, "≈" where a row is not distinguishable from the row above (as in the sweep summary)."""
    columns, rows = with_tasks(with_floor(used(REPORT, rows), rows), rows), ties.quality_order(rows)
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells(columns, rows)]
    return "\n".join(lines)


def csv_text(rows: List[Row]) -> str:
    names = sorted({k for r in rows for k in r.metrics})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run_id", "format", "backend", "engine", "hardware", "status"] + names)
    for r in rows:
        w.writerow(
            [
                r.run_id,
                r.format,
                r.params.get("format.backend", ""),
                r.params.get("format.engine", ""),
                r.params.get("hardware.name", ""),
                r.status,
            ]
            + [r.metrics.get(n, "") for n in names]
        )
    return buf.getvalue()


def write_report(
    rows: List[Row], out: Path, curves: Optional[Dict[str, list]] = None, slo_latency_s: Optional[float] = None
) -> List[Path]:
    from runner.report.plots import capacity_plot, pareto_plot, speed_plot, throughput_plot

    out.mkdir(parents=True, exist_ok=True)
    files = [out / "table.md", out / "table.csv"]
    files[0].write_text(markdown(rows) + "\n")
    files[1].write_text(csv_text(rows))
    quality = quality_markdown(rows)
    if quality:
        files.append(out / "quality.md")
        files[-1].write_text(quality)
    for plot in (pareto_plot, speed_plot, throughput_plot):
        path = plot(rows, out)
        if path:
            files.append(path)
    if curves:
        files.append(capacity_plot(curves, out, slo_latency_s))
    return files


def capacity_curves(client, rows: List[Row]) -> Dict[str, list]:
    """label -> the capacity search's probes (artifacts/serving/capacity.csv of each run that searched)."""
    import tempfile

    from runner.tracking import capacity_csv

    curves = {}
    with tempfile.TemporaryDirectory(prefix="qrun-capacity-") as scratch:
        for r in rows:
            if r.get(M.CAPACITY_MAX_USERS) is None:
                continue
            dst = Path(scratch) / r.run_id
            dst.mkdir()
            try:
                local = client.download_artifacts(r.run_id, "artifacts/serving/capacity.csv", str(dst))
            except Exception:  # an older or foreign run without the file: no curve, the metric still speaks
                continue
            curves[r.label] = capacity_csv.read(Path(local))
    return curves


def _hardware_budget(name: str) -> Optional[float]:
    from runner.config.presets import load_preset

    return load_preset("hardware", name, "--hardware").memory_budget_bytes


def parse_limits(items: List[str]) -> Dict[str, float]:
    limits = {}
    for item in items:
        name, _, value = item.partition("=")
        if not M.is_declared(name) or M.get(name).better == "neither":
            options = sorted(n for n, m in M.METRICS.items() if m.better != "neither")
            raise UserError("--limit", f"'{name}' is not a metric with a better side", f"use one of {options}")
        try:
            limits[name] = float(value)
        except ValueError:
            raise UserError("--limit", f"'{item}' has no number after '='", f"write {name}=<number>") from None
    return limits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="qrun-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", nargs="?", default="table", choices=["table", "recommend"])
    ap.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    ap.add_argument("--experiment", default="quant-runner")
    ap.add_argument("--sweep", default="latest", help="a sweep's parent run id, or 'latest'")
    ap.add_argument("--all", action="store_true", help="every job's newest finished run instead of one sweep")
    ap.add_argument("--out", help="folder for table.md/table.csv/PNGs (default: reports/<sweep id>)")
    ap.add_argument("--hardware", help="recommend: only runs measured on this profile; its memory budget applies")
    ap.add_argument("--memory-gb", type=float, help="recommend: memory budget in GiB (overrides the profile's)")
    ap.add_argument("--max-latency-p95", type=float, metavar="S")
    ap.add_argument("--min-throughput", type=float, metavar="TOK_S")
    ap.add_argument("--max-ppl-delta", type=float, metavar="PCT")
    ap.add_argument("--max-kld", type=float)
    ap.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="recommend: a bound on any declared metric (a maximum where lower is better, else a minimum)",
    )
    ap.add_argument(
        "--prefer",
        choices=["quality", "speed", "size"],
        default=None,
        help="recommend: quality (default), speed or size; with --deployment: the scenario's own",
    )
    ap.add_argument(
        "--deployment",
        metavar="SCENARIO",
        help="recommend: a deployment scenario (conf/deployment/); only runs measured like it are judged",
    )
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    rows, parent = load_rows(args.tracking_uri, args.experiment, None if args.all else args.sweep)
    if not rows:
        raise UserError("--sweep", "the selected sweep has no runs", "pick another sweep or pass --all")
    if args.command == "table":
        print(markdown(rows))
        quality = quality_markdown(rows)
        if quality:
            print("\n" + quality, end="")
        out = Path(args.out or Path("reports") / (parent or "all"))
        files = write_report(rows, out)
        print(f"\nwrote {', '.join(str(f) for f in files)}")
        if parent:
            from runner.report.data import _client

            client = _client(args.tracking_uri)
            for f in files:
                client.log_artifact(parent, str(f), artifact_path="report")
            print(f"logged to MLflow run {parent} (artifacts/report)")
        return 0
    if args.deployment:
        from runner.report.data import _client

        return _recommend_scenario(args, rows, capacity_curves(_client(args.tracking_uri), rows))
    budget = (
        args.memory_gb * 1024**3 if args.memory_gb else (_hardware_budget(args.hardware) if args.hardware else None)
    )
    if args.hardware:
        rows = [r for r in rows if r.params.get("hardware.name") == args.hardware]
        if not rows:
            raise UserError(
                "--hardware",
                f"no run was measured on '{args.hardware}'",
                "run the sweep with hardware=" + args.hardware,
            )
    c = Constraints(
        budget, args.max_latency_p95, args.min_throughput, args.max_ppl_delta, args.max_kld, parse_limits(args.limit)
    )
    result = recommend(rows, c, args.prefer or "quality")
    if result["choice"] is None:
        print(f"no recommendation: {result['reason']}")
        return 1
    print(f"recommend {result['reason']}")
    for label, why in result["rejected"].items():
        print(f"  rejected {floor.mark(label, rows)}: {', '.join(why)}")
    if floor.floor_name(rows) is not None:
        within = floor.within_labels(rows)
        print(f"  {floor.WITHIN} ({floor.KEY}={floor.floor_name(rows)}): {', '.join(within) or 'none'}")
    return 0


def _recommend_scenario(args, rows: List[Row], curves: Dict[str, list]) -> int:
    """qrun-report recommend --deployment NAME: the sweep's own decision, on any stored runs."""
    from runner.config.deployment import validate
    from runner.config.presets import load_preset
    from runner.report.decision_text import decision_text
    from runner.report.served import served_section

    d = load_preset("deployment", args.deployment, "--deployment")
    validate(d)
    if args.prefer:
        d.prefer = args.prefer
    if args.memory_gb:
        d.memory_budget_bytes = int(args.memory_gb * 1024**3)
    c = Constraints.of_scenario(d, _hardware_budget(d.hardware))
    c.limits = parse_limits(args.limit)
    result = recommend(rows, c, d.prefer)
    print(decision_text(result, c, rows) + served_section(rows, curves), end="")
    return 0 if result["choice"] is not None else 1
