"""AWQ (llm-compressor) quantize cost and quality vs the size of its scale search (`format.n_grid`).

For each grid size: one `qrun format=awq_int4 format.n_grid=G` job (quantize + evaluate, benchmark skipped),
timed from outside: wall and CPU seconds (user + sys of the job process and its children) and the load average
before and after, since CPU seconds are what survive a shared machine. Quality (Δppl, KLD, top-1 with their
95 % paired intervals) comes from the job's MLflow run; rows whose intervals overlap the first row's are
marked "≈" (runner/report/ties.py decides, as in the sweep summary).

    python timings/awq_grid.py --grids 20,10,5                       # SmolLM2-135M, calibration=quick, eval=default
    python timings/awq_grid.py --grids 10 --cache /tmp/awq_cache     # a private cache (QRUN_CACHE_DIR)

A grid point whose artifact is already cached costs no quantize: use a fresh cache for timings.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from runner.report import ties  # noqa: E402

METRICS = ("quality/ppl_delta_pct", "quality/kld_mean", "quality/top1_agree")


def run_job(grid: int, db: Path, cache: str, extra) -> dict:
    env = dict(os.environ, QRUN_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
    args = [
        sys.executable,
        "-m",
        "runner",
        "format=awq_int4",
        f"format.n_grid={grid}",
        "calibration=quick",
        "eval=default",
        "stages=[quantize,evaluate]",
        f"tracking.uri=sqlite:///{db}",
        "tracking.experiment=awq_grid",
        *extra,
    ]
    before, load0, start = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0], time.perf_counter()
    proc = subprocess.run(args, cwd=db.parent, env=env, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"n_grid={grid} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"grid": grid, "wall": wall, "cpu": cpu, "load": (load0, os.getloadavg()[0])}


def rows(db: Path):
    from runner.report.data import load_rows

    return load_rows(f"sqlite:///{db}", "awq_grid", sweep=None)[0]  # single jobs: no sweep parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grids", default="20,10,5")
    p.add_argument("--cache", default=tempfile.mkdtemp(prefix="awq-grid-cache-"))
    p.add_argument("extra", nargs="*", help="more qrun overrides, e.g. calibration=packaged")
    a = p.parse_args()
    db = Path(tempfile.mkdtemp(prefix="awq-grid-")) / "mlflow.db"
    timed = [run_job(int(g), db, a.cache, a.extra) for g in a.grids.split(",")]
    by_grid = {int(r.params["format.n_grid"]): r for r in rows(db)}
    first = by_grid[timed[0]["grid"]]
    print(
        f"{'n_grid':>6} {'job wall s':>10} {'job CPU s':>9} {'quantize s':>10} {'load':>9}  "
        + "  ".join(f"{m.split('/')[1]:>22}" for m in METRICS)
    )
    for t in timed:
        row = by_grid[t["grid"]]
        cells = []
        for m in METRICS:
            low, high = ties.ci(row, m) or (float("nan"),) * 2
            same = "≈" if row is not first and ties.indistinguishable(row, first, m) else " "
            cells.append(f"{same}{row.get(m):.4f} [{low:.4f},{high:.4f}]".rjust(22))
        print(
            f"{t['grid']:>6} {t['wall']:>10.1f} {t['cpu']:>9.1f} {row.get('time/quantize_s'):>10.1f} "
            f"{t['load'][0]:>4.1f}-{t['load'][1]:<4.1f}  " + "  ".join(cells)
        )
    print("≈: the interval overlaps the first row's (not distinguishable on this protocol)")


if __name__ == "__main__":
    main()
