"""PNG plots for the report: quality vs size (with the Pareto front) and quality vs decode speed."""
from pathlib import Path
from typing import List, Optional

from runner import metrics as M
from runner.report.data import Row

Y_METRIC = "quality/kld_mean"


def _points(rows: List[Row], x_metric: str):
    pts = [(r.get(x_metric), r.get(Y_METRIC), r.label) for r in rows
           if r.status == "FINISHED" and r.get(x_metric) and r.get(Y_METRIC) is not None]
    return pts


def pareto_front(points):
    """Points no other point beats on both axes (smaller x and smaller y), sorted by x."""
    front = []
    for x, y, label in sorted(points, key=lambda p: (p[0], p[1])):
        if not front or y < front[-1][1]:
            front.append((x, y, label))
    return front


def _figure(points, xlabel, title, out: Path, front=None) -> Optional[Path]:
    if len(points) < 1:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    xs, ys, labels = zip(*points)
    floor = min([y for y in ys if y > 0], default=1e-4) / 3  # the baseline has KLD 0: draw it at the bottom
    ys = [max(y, floor) for y in ys]
    ax.scatter(xs, ys, s=36, color="tab:blue", zorder=3)
    for x, y, label in zip(xs, ys, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if front and len(front) > 1:
        fx, fy, _ = zip(*front)
        ax.plot(fx, [max(y, floor) for y in fy], color="tab:orange", lw=1.5, label="Pareto front", zorder=2)
        ax.legend()
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{M.get(Y_METRIC).header} vs baseline (log; {M.get(Y_METRIC).better} is better)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def pareto_plot(rows: List[Row], out_dir: Path) -> Optional[Path]:
    pts = [(x / 1e6, y, l) for x, y, l in _points(rows, "size/bytes")]
    return _figure(pts, "weights size (MB)", "Quality vs size", out_dir / "quality_vs_size.png", pareto_front(pts))


def speed_plot(rows: List[Row], out_dir: Path) -> Optional[Path]:
    xm = M.get("perf/decode_tok_s")
    pts = _points(rows, xm.name)
    front = pareto_front([(-x, y, l) for x, y, l in pts])  # faster is better: flip x for the front
    return _figure(pts, f"decode tok/s (single stream; {xm.better} is better)", "Quality vs decode speed",
                   out_dir / "quality_vs_speed.png", [(-x, y, l) for x, y, l in front])
