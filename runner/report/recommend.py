"""Pick a format under deployment constraints from measured runs, and say why.

Rule: keep the runs measured on the target hardware; drop every run that breaks a constraint;
among the rest take the best by `prefer`: quality (lowest KLD vs the baseline, then Δppl; ties
within `quality_tie` go to the faster one), speed (highest throughput) or size (least memory).
Throughput is the serving benchmark's output tok/s when measured, else single-stream decode tok/s;
latency p95 likewise (serving under load, else single stream). `limits` bound any declared metric
in the direction the catalog gives it (runner/metrics.py).
Memory is peak VRAM on GPU runs (none logged: "memory not measured"; host RSS says nothing about a VRAM
budget), on CPU runs peak RSS, else the file size.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from runner import metrics as M
from runner.report.data import Row

GIB = 1024 ** 3


@dataclass
class Constraints:
    memory_bytes: Optional[float] = None
    max_latency_p95_s: Optional[float] = None
    min_throughput_tok_s: Optional[float] = None
    max_ppl_delta_pct: Optional[float] = None
    max_kld: Optional[float] = None
    limits: Dict[str, float] = field(default_factory=dict)  # metric name -> bound


def on_gpu(row: Row) -> bool:
    device = row.params.get("hardware.device")
    return str(device).startswith("cuda") if device else row.get("perf/peak_vram_bytes") is not None


def memory(row: Row) -> Optional[float]:
    if on_gpu(row):
        return row.get("perf/peak_vram_bytes") or None
    for name in ("perf/peak_rss_bytes", "size/bytes"):
        if row.get(name):
            return row.get(name)
    return None


def _served_or(row: Row, serving: str, offline: str) -> str:
    """The serving benchmark's metric where this run measured it, else the offline one."""
    return serving if row.get(serving) is not None else offline


def throughput_metric(row: Row) -> str:
    return _served_or(row, "serving/throughput_tok_s", "perf/decode_tok_s")


def latency_metric(row: Row) -> str:
    return _served_or(row, "serving/latency_s_p95", "perf/latency_s_p95")


def throughput(row: Row) -> Optional[float]:
    return row.get(throughput_metric(row))


def latency_p95(row: Row) -> Optional[float]:
    return row.get(latency_metric(row))


def _fmt(name: str, value: float) -> str:
    return M.get(name).format(value)


def violations(row: Row, c: Constraints) -> List[str]:
    out = []
    checks = [
        ("memory", c.memory_bytes, memory(row), lambda v, lim: v <= lim, lambda v, lim: f"needs {v / GIB:.2f} GiB > {lim / GIB:.2f} GiB"),
        ("latency p95", c.max_latency_p95_s, latency_p95(row), lambda v, lim: v <= lim,
         lambda v, lim: f"p95 {_fmt(latency_metric(row), v)} s > {lim:g} s"),
        ("throughput", c.min_throughput_tok_s, throughput(row), lambda v, lim: v >= lim,
         lambda v, lim: f"{_fmt(throughput_metric(row), v)} tok/s < {lim:g}"),
        ("Δppl", c.max_ppl_delta_pct, row.get("quality/ppl_delta_pct"), lambda v, lim: v <= lim,
         lambda v, lim: f"Δppl {_fmt('quality/ppl_delta_pct', v)} % > {lim:g} %"),
        ("KLD", c.max_kld, row.get("quality/kld_mean"), lambda v, lim: v <= lim,
         lambda v, lim: f"KLD {_fmt('quality/kld_mean', v)} > {lim:g}"),
    ]
    for name, limit in c.limits.items():
        m = M.get(name)
        sign = "<" if m.better == "higher" else ">"
        checks.append((m.header, limit, row.get(name), m.within,
                       lambda v, lim, m=m, sign=sign: f"{m.header} {m.format(v)} {sign} {lim:g}"))
    for name, limit, value, ok, why in checks:
        if limit is None:
            continue
        if value is None:
            out.append(f"{name} not measured")
        elif not ok(value, limit):
            out.append(why(value, limit))
    return out


def _quality_key(row: Row) -> Tuple[float, float]:
    kld = row.get("quality/kld_mean")
    ppl = row.get("quality/ppl_delta_pct")
    return (kld if kld is not None else float("inf"), ppl if ppl is not None else float("inf"))


def rank(rows: List[Row], prefer: str, quality_tie: float = 0.002) -> List[Row]:
    if prefer == "speed":
        return sorted(rows, key=lambda r: -(throughput(r) or 0))
    if prefer == "size":
        return sorted(rows, key=lambda r: memory(r) or float("inf"))
    best = min(_quality_key(r)[0] for r in rows)

    def key(r: Row):
        kld, ppl = _quality_key(r)
        if kld <= best + quality_tie:  # as good as the best: the faster one wins among these
            return (0, -(throughput(r) or 0), kld)
        return (1, kld, ppl)

    return sorted(rows, key=key)


def recommend(rows: List[Row], c: Constraints, prefer: str = "quality") -> Dict:
    """{'choice': Row | None, 'reason': str, 'feasible': [...], 'rejected': {label: [why...]}}"""
    finished = [r for r in rows if r.status == "FINISHED"]
    why = {r.run_id: violations(r, c) for r in finished}
    feasible = [r for r in finished if not why[r.run_id]]
    rejected = {r.label: why[r.run_id] for r in finished if why[r.run_id]}
    if not feasible:
        return {"choice": None, "feasible": [], "rejected": rejected,
                "reason": f"no format of {len(finished)} meets every constraint; " + "; ".join(
                    f"{label}: {', '.join(why)}" for label, why in rejected.items())}
    ranked = rank(feasible, prefer)
    choice = ranked[0]
    kld, dppl, p95 = choice.get("quality/kld_mean"), choice.get("quality/ppl_delta_pct"), latency_p95(choice)
    facts = [f"KLD {_fmt('quality/kld_mean', kld)}" if kld is not None else None,
             f"Δppl {_fmt('quality/ppl_delta_pct', dppl)} %" if dppl is not None else None,
             f"{_fmt(throughput_metric(choice), throughput(choice))} tok/s" if throughput(choice) else None,
             f"p95 {_fmt(latency_metric(choice), p95)} s" if p95 is not None else None,
             f"{memory(choice) / GIB:.2f} GiB" if memory(choice) else None]
    runner_up = f"; next: {ranked[1].label}" if len(ranked) > 1 else ""
    reason = (f"{choice.label}: best by {prefer} of {len(feasible)} feasible run(s) out of {len(finished)} "
              f"({', '.join(f for f in facts if f)}){runner_up}")
    return {"choice": choice, "feasible": ranked, "rejected": rejected, "reason": reason}
