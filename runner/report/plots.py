"""PNG plots for the report: quality vs size (with the Pareto front), quality vs decode speed, quality vs total
tokens/s under the measured load (with its Pareto front), and users vs P95 latency per format (the capacity search's
probes)."""

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from runner import metrics as M
from runner.report.data import Row
from runner.tracking.capacity_csv import measured

Y_METRIC = M.QUALITY_KLD_MEAN


def _points(rows: List[Row], x_metric: str):
    pts = [
        (r.get(x_metric), r.get(Y_METRIC), r.label)
        for r in rows
        if r.status == "FINISHED" and r.get(x_metric) and r.get(Y_METRIC) is not None
    ]
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
    pts = [(x / 1e6, y, l) for x, y, l in _points(rows, M.SIZE_BYTES)]
    return _figure(pts, "weights size (MB)", "Quality vs size", out_dir / "quality_vs_size.png", pareto_front(pts))


def faster_front(points):
    """The Pareto front where a larger x is better (speeds): pareto_front on x flipped, flipped back."""
    return [(-x, y, l) for x, y, l in pareto_front([(-x, y, l) for x, y, l in points])]


def speed_plot(rows: List[Row], out_dir: Path) -> Optional[Path]:
    xm = M.get(M.PERF_DECODE_TOK_S)
    pts = _points(rows, xm.name)
    return _figure(
        pts,
        f"decode tok/s (single stream; {xm.better} is better)",
        "Quality vs decode speed",
        out_dir / "quality_vs_speed.png",
        faster_front(pts),
    )


def throughput_plot(rows: List[Row], out_dir: Path) -> Optional[Path]:
    """Quality vs all users' output tokens/s under the measured load, with the Pareto front: the formats worth
    deploying at that load. The serving benchmark's runs where at least two have one, else the offline benchmark's;
    never the two mixed in one plot."""
    served = _points(rows, M.SERVING_THROUGHPUT_TOK_S)
    xm = M.get(M.SERVING_THROUGHPUT_TOK_S if len(served) >= 2 else M.PERF_THROUGHPUT_TOK_S)
    pts = served if len(served) >= 2 else _points(rows, xm.name)
    if len(pts) < 2:
        return None
    where = "all users under the serving load" if len(served) >= 2 else "single stream, offline"
    return _figure(
        pts,
        f"total output tok/s ({where}; {xm.better} is better)",
        "Quality vs total throughput",
        out_dir / "quality_vs_throughput.png",
        faster_front(pts),
    )


def capacity_points(probes: List[dict]) -> Tuple[List[tuple], List[tuple]]:
    """((users, p95, meets) of the measured probes, (users, partial p95) of those the time budget cut short)."""
    with_p95 = [p for p in probes if p.get("latency_s_p95") not in ("", None)]
    pts = sorted((p["users"], p["latency_s_p95"], p["meets_slo"]) for p in with_p95 if measured(p))
    cut = sorted((p["users"], p["latency_s_p95"]) for p in with_p95 if not measured(p))
    return pts, cut


def capacity_plot(curves: Dict[str, List[dict]], out_dir: Path, slo_latency_s: Optional[float] = None) -> Path:
    """Users vs end-to-end P95 latency, one line per format (each probe of its capacity search), and the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for label, probes in sorted(curves.items()):
        pts, cut = capacity_points(probes)
        if not pts and not cut:
            continue
        color = None
        if pts:
            xs, ys, _ = zip(*pts)
            (line,) = ax.plot(xs, ys, marker="o", lw=1.5, label=label)
            color = line.get_color()
            ax.scatter(
                [x for x, y, m in pts if not m],
                [y for x, y, m in pts if not m],
                marker="x",
                s=60,
                color=color,
                zorder=3,
            )
        if cut:  # partial numbers of a cut-short probe: drawn apart, never on the line
            ax.scatter(
                [x for x, _ in cut],
                [y for _, y in cut],
                marker="o",
                s=60,
                facecolors="none",
                edgecolors=color or "grey",
                zorder=3,
                label=None if pts else label,
            )
    if slo_latency_s is not None:
        ax.axhline(slo_latency_s, color="tab:red", ls="--", lw=1, label=f"SLO: P95 {slo_latency_s:g} s")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("concurrent users (closed loop)")
    ax.set_ylabel(f"{M.get(M.SERVING_LATENCY_S_P95).header} (end-to-end P95, s)")
    ax.set_title("Capacity: users vs P95 latency per format (x: misses the SLO; ○: cut short, not measured)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "capacity_users_vs_p95.png"
    fig.savefig(path)
    plt.close(fig)
    return path
