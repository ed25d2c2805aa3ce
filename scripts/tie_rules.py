"""Which "≈" calls of a sweep change between the two tie rules: overlap of two intervals vs the paired difference.

For every pair of finished runs with quality metrics and every tie-marked metric (Δppl, KLD, top-1), prints what
interval overlap says, what the paired bootstrap interval of the difference says (runner/report/ties.py), and that
interval; then the pairs whose call changed. Runs without window sums (older runs) have no paired call.

    python scripts/tie_rules.py                                   # the latest sweep in sqlite:///mlflow.db
    python scripts/tie_rules.py --tracking-uri sqlite:///x.db --sweep <parent run id>
"""

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runner import metrics as M  # noqa: E402
from runner.report import ties  # noqa: E402
from runner.report.columns import TIE_MARKED  # noqa: E402
from runner.report.data import load_rows  # noqa: E402


def overlap(a, b, name: str):
    ia, ib = ties.interval(a, name), ties.interval(b, name)
    return None if ia is None or ib is None else (ia[0] <= ib[1] and ib[0] <= ia[1])


def word(tied) -> str:
    return "-" if tied is None else ("≈" if tied else "differ")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    ap.add_argument("--experiment", default="quant-runner")
    ap.add_argument("--sweep", default="latest")
    args = ap.parse_args()
    rows, parent = load_rows(args.tracking_uri, args.experiment, args.sweep)
    rows = ties.quality_order([r for r in rows if r.status == "FINISHED" and r.get(M.QUALITY_KLD_MEAN) is not None])
    print(
        f"sweep {parent}: {len(rows)} runs with quality metrics, {sum(r.window_sums is not None for r in rows)} "
        "with window sums"
    )
    print(f"{'pair':34} {'metric':8} {'overlap':>8} {'paired':>8}  paired difference a - b [95 % interval]")
    changed = []
    for a, b in itertools.combinations(rows, 2):
        for name in TIE_MARKED:
            before = overlap(a, b, name)
            d = ties.difference(a, b, name)
            after = None if d is None else d[1] <= 0.0 <= d[2]
            m = M.get(name)
            diff = "" if d is None else f"{m.format(d[0])} [{m.format(d[1])}, {m.format(d[2])}]"
            pair = f"{a.label} vs {b.label}"
            print(f"{pair:34} {m.header:8} {word(before):>8} {word(after):>8}  {diff}")
            if before is not None and after is not None and before != after:
                changed.append(f"{pair} on {m.header}: {word(before)} -> {word(after)} ({diff})")
    print(f"\n{len(changed)} call(s) changed from the overlap rule to the paired rule:")
    for line in changed:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
