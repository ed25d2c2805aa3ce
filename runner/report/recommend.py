"""Pick a format under deployment constraints from measured runs, and say why.

Rule: drop every run that breaks a constraint; among the rest take the best by `prefer`: quality
(lowest KLD vs the baseline, then Δppl), speed (highest throughput; under Poisson arrivals, where
throughput is the offered rate, lowest latency p95) or size (least memory). Formats that are not
distinguishable from the best on the deciding metric (runner/report/ties.py: the interval of their
difference contains 0) are a tie with it, and a tie goes to the faster one (quality) or the better
quality (speed, size).

With a deployment scenario (runner/config/deployment.py), like with like: only runs measured on the
scenario's hardware profile under its load (benchmark kind, lengths, concurrency, arrival) are
judged, and latency/throughput come from that load's metrics (serving p95 under the scenario's users,
or the offline single stream for an offline scenario); a format with no such run is rejected as "not
measured like the scenario". Failed and unsent requests count: a failure rate above the scenario's
bound rejects a format. A format whose job failed is rejected with its error, one the pre-flight fit check skipped
(tag `skipped`, runner/benchmark/fit.py) with the estimate that did not fit.
Without a scenario (`qrun-report recommend --max-latency-p95 ...`): each run's own benchmark
(serving where measured, else single stream), as the flags have always meant.
`limits` bound any declared metric in the direction the catalog gives it (runner/metrics.py).
Memory is peak VRAM on GPU runs (none logged: "memory not measured"; host RSS says nothing about a VRAM
budget), on CPU runs peak PSS of a process tree, else peak RSS, else the file size; a memory bound is held
against the larger of that and the computed need (weights + KV cache at the load), labelled as which.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from runner import metrics as M
from runner.report.data import Row
from runner.report.measures import (
    GIB,
    failure_rate,
    fmt,
    latency_metric,
    latency_p95,
    memory,
    memory_violation,
    p95_words,
    pct,
    throughput,
    throughput_metric,
)
from runner.report.ties import quality_key
from runner.tracking import SKIPPED_TAG


@dataclass
class Constraints:
    memory_bytes: Optional[float] = None
    max_latency_p95_s: Optional[float] = None
    min_throughput_tok_s: Optional[float] = None
    max_ppl_delta_pct: Optional[float] = None
    max_kld: Optional[float] = None
    limits: Dict[str, float] = field(default_factory=dict)  # metric name -> bound
    max_ttft_p95_s: Optional[float] = None
    max_tpot_p95_s: Optional[float] = None
    max_failure_rate: Optional[float] = None
    scenario: Any = None  # a deployment scenario: judge only runs measured like it (runner/config/deployment.py)

    @classmethod
    def of_scenario(cls, d, hardware_budget: Optional[float] = None) -> "Constraints":
        return cls(
            memory_bytes=d.memory_budget_bytes or hardware_budget,
            max_latency_p95_s=d.slo.latency_s,
            min_throughput_tok_s=d.min_throughput_tok_s,
            max_ppl_delta_pct=d.max_ppl_delta_pct,
            max_kld=d.max_kld,
            max_ttft_p95_s=d.slo.ttft_s,
            max_tpot_p95_s=d.slo.tpot_s,
            max_failure_rate=d.max_failure_rate if d.kind == "serving" else None,
            scenario=d,
        )


def like_scenario(row: Row, c: Constraints) -> Optional[str]:
    """None when the run may be judged against c's scenario, else why not (hardware, or the load it ran)."""
    d = c.scenario
    if d is None:
        return None
    hw = row.params.get("hardware.name")
    if hw is not None and hw != d.hardware:
        return f"measured on hardware '{hw}', the scenario is for '{d.hardware}'"
    from runner.report.scenario import mismatch, server_mismatch

    return mismatch(row.params, d) or server_mismatch(row.format, row.tags, d)


def violations(row: Row, c: Constraints) -> List[str]:
    not_like = like_scenario(row, c)
    if not_like:
        return [not_like]
    lat = latency_metric(row, c)
    checks = [
        (
            "latency p95",
            c.max_latency_p95_s,
            row.get(lat) if lat else None,
            lambda v, lim: v <= lim,
            lambda v, lim: f"{p95_words(row, lat)} {fmt(lat, v)} s > {lim:g} s",
        ),
    ]
    for what, limit, name in (
        ("TTFT p95", c.max_ttft_p95_s, M.SERVING_TTFT_S_P95),
        ("TPOT p95", c.max_tpot_p95_s, M.SERVING_TPOT_S_P95),
    ):
        checks.append(
            (
                what,
                limit,
                row.get(name),
                lambda v, lim: v <= lim,
                lambda v, lim, what=what, name=name: f"{what} {fmt(name, v)} s > {lim:g} s",
            )
        )
    checks += [
        (
            "throughput",
            c.min_throughput_tok_s,
            throughput(row, c),
            lambda v, lim: v >= lim,
            lambda v, lim: f"{fmt(throughput_metric(row, c), v)} tok/s < {lim:g}",
        ),
        (
            "failure rate",
            c.max_failure_rate,
            failure_rate(row),
            lambda v, lim: v <= lim,
            lambda v, lim: f"{pct(v)} of requests failed or not sent > {pct(lim)}",
        ),
        (
            "Δppl",
            c.max_ppl_delta_pct,
            row.get(M.QUALITY_PPL_DELTA_PCT),
            lambda v, lim: v <= lim,
            lambda v, lim: f"Δppl {fmt(M.QUALITY_PPL_DELTA_PCT, v)} % > {lim:g} %",
        ),
        (
            "KLD",
            c.max_kld,
            row.get(M.QUALITY_KLD_MEAN),
            lambda v, lim: v <= lim,
            lambda v, lim: f"KLD {fmt(M.QUALITY_KLD_MEAN, v)} > {lim:g}",
        ),
    ]
    for name, limit in c.limits.items():
        m = M.get(name)
        sign = "<" if m.better == "higher" else ">"
        checks.append(
            (
                m.header,
                limit,
                row.get(name),
                m.within,
                lambda v, lim, m=m, sign=sign: f"{m.header} {m.format(v)} {sign} {lim:g}",
            )
        )
    over_memory = memory_violation(row, c.memory_bytes)
    out = [over_memory] if over_memory else []
    for name, limit, value, ok, why in checks:
        if limit is None:
            continue
        if value is None:
            out.append(f"{name} not measured")
        elif not ok(value, limit):
            out.append(why(value, limit))
    return out


def _quality_metric(row: Row) -> str:
    return M.QUALITY_KLD_MEAN if row.get(M.QUALITY_KLD_MEAN) is not None else M.QUALITY_PPL_DELTA_PCT


def tied(a: Row, b: Row, name: str) -> bool:
    """Not distinguishable on `name` (runner/report/ties.py); without intervals: equal values only."""
    from runner.report.ties import indistinguishable

    return indistinguishable(a, b, name) or (a.get(name) is not None and a.get(name) == b.get(name))


def poisson(row: Row, c: Optional[Constraints] = None) -> bool:
    """Measured (or judged) under Poisson arrivals: its throughput is the offered rate, not the format's speed."""
    if c is not None and c.scenario is not None:
        return c.scenario.kind == "serving" and c.scenario.arrival == "poisson"
    return row.params.get("benchmark.kind") == "serving" and row.params.get("benchmark.arrival") == "poisson"


def speed_metric(row: Row, c: Optional[Constraints] = None) -> str:
    """What 'faster' means for this run: its throughput, or its latency p95 under Poisson arrivals."""
    return latency_metric(row, c) if poisson(row, c) else throughput_metric(row, c)


def speed_key(row: Row, c: Optional[Constraints] = None) -> float:
    """Sort key, fastest first (speed_metric); a run without the metric sorts last."""
    name = speed_metric(row, c)
    value = row.get(name)
    if value is None:
        return float("inf")
    return -value if M.get(name).better == "higher" else value


def deciding_metric(row: Row, prefer: str, c: Optional[Constraints] = None) -> str:
    """The metric `prefer` ranks on, for the best row."""
    if prefer == "quality":
        return _quality_metric(row)
    return speed_metric(row, c) if prefer == "speed" else M.SIZE_BYTES


def rank(rows: List[Row], prefer: str, c: Optional[Constraints] = None) -> List[Row]:
    """Best first. The rows tied with the best on the deciding metric come first, ordered by the tie-break."""
    ordered, ties = leader_ties(rows, prefer, c)
    tie_break = quality_key if prefer == "speed" else (lambda r: speed_key(r, c))
    return sorted(ties, key=tie_break) + [r for r in ordered if not any(r is t for t in ties)]


def leader_ties(rows: List[Row], prefer: str, c: Optional[Constraints]) -> Tuple[List[Row], List[Row]]:
    """(rows ordered by the deciding metric alone, the best of them and the rows tied with it)."""
    if prefer == "size":  # memory has no interval: no ties
        ordered = sorted(rows, key=lambda r: (memory(r) or float("inf"), quality_key(r)))
        return ordered, ordered[:1]
    ordered = sorted(rows, key=(lambda r: speed_key(r, c)) if prefer == "speed" else quality_key)
    best, name = ordered[0], deciding_metric(ordered[0], prefer, c)
    return ordered, [r for r in ordered if r is best or tied(r, best, name)]


def facts(row: Row, c: Constraints) -> str:
    kld, dppl, p95, tput = (
        row.get(M.QUALITY_KLD_MEAN),
        row.get(M.QUALITY_PPL_DELTA_PCT),
        latency_p95(row, c),
        throughput(row, c),
    )
    fr = failure_rate(row) if c.scenario is not None else None
    facts = [
        f"KLD {fmt(M.QUALITY_KLD_MEAN, kld)}" if kld is not None else None,
        f"Δppl {fmt(M.QUALITY_PPL_DELTA_PCT, dppl)} %" if dppl is not None else None,
        f"{fmt(throughput_metric(row, c), tput)} tok/s" if tput else None,
        f"{p95_words(row, latency_metric(row, c))} {fmt(latency_metric(row, c), p95)} s" if p95 is not None else None,
        f"{pct(fr)} failed" if fr is not None else None,
        f"{memory(row) / GIB:.2f} GiB" if memory(row) else None,
    ]
    return ", ".join(f for f in facts if f)


def recommend(rows: List[Row], c: Constraints, prefer: str = "quality") -> Dict:
    """{'choice': Row | None, 'runner_up', 'reason': one line, 'feasible': ranked, 'rejected': {label: [why...]},
    'ties': labels tied with the choice, 'set_aside': labels of runs not measured like the scenario (another run of
    the same format was)}."""
    skipped = [r for r in rows if r.tags.get(SKIPPED_TAG)]  # did no work: the pre-flight check found it cannot fit
    finished = [r for r in rows if r.status == "FINISHED" and not r.tags.get(SKIPPED_TAG)]
    why = {r.run_id: violations(r, c) for r in finished}
    judged, set_aside = finished, []
    if c.scenario is not None:  # a format measured like the scenario is judged on those runs only
        like = {r.label for r in finished if not like_scenario(r, c)}
        judged = [r for r in finished if r.label not in like or not like_scenario(r, c)]
        set_aside = sorted({r.label for r in finished if r.label in like and like_scenario(r, c)})
    feasible = [r for r in judged if not why[r.run_id]]
    rejected: Dict[str, List[str]] = {}
    for r in judged:
        if why[r.run_id] and r.label not in {f.label for f in feasible}:
            rejected.setdefault(r.label, why[r.run_id])
    for r in skipped:
        if r.label not in {f.label for f in feasible}:
            rejected.setdefault(r.label, [f"skipped before any work, {r.tags[SKIPPED_TAG]}"])
    if c.scenario is not None:
        for r in rows:
            if r.status != "FINISHED" and r.label not in {f.label for f in finished}:
                rejected.setdefault(
                    r.label, [f"the job did not finish ({r.status}: {r.tags.get('error', 'see its error.txt')})"]
                )
    base = {"rejected": rejected, "set_aside": set_aside, "runner_up": None, "ties": []}
    if not feasible:
        return {
            **base,
            "choice": None,
            "feasible": [],
            "reason": f"no format of {len(judged)} meets every constraint; "
            + "; ".join(f"{label}: {', '.join(w)}" for label, w in rejected.items()),
        }
    ranked = rank(feasible, prefer, c)
    choice = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    ordered, tied_best = leader_ties(feasible, prefer, c)
    best, name = ordered[0], deciding_metric(ordered[0], prefer, c)
    ties = [r.label for r in tied_best if r is not choice]
    tie_text = (
        (
            f"; ≈ {', '.join(ties)} on {M.get(name).header}: not distinguishable from the best, {best.label} "
            f"({_tie_how(best, tied_best, name)}), so the tie went to the "
            f"{'fastest' if prefer == 'quality' else 'best quality'}"
        )
        if ties
        else ""
    )
    reason = (
        f"{choice.label}: best by {prefer} of {len(feasible)} feasible run(s) out of {len(judged)} "
        f"({facts(choice, c)}){tie_text}{noisy_text(choice, prefer, c, bool(ties))}"
        + (f"; next: {runner_up.label}" if runner_up else "")
    )
    return {**base, "choice": choice, "runner_up": runner_up, "feasible": ranked, "reason": reason, "ties": ties}


def _tie_how(best: Row, tied_rows: List[Row], name: str) -> str:
    """How the ties with `best` were told: the rule of runner/report/ties.py that applied."""
    from runner.report import ties

    how = {ties.comparison(r, best, name) for r in tied_rows if r is not best} - {None}
    words = {
        ties.PAIRED: "the paired 95 % interval of the difference on the same windows contains 0",
        ties.INDEPENDENT: "the 95 % interval of the difference of the repeats' means contains 0",
        ties.OVERLAP: "their 95 % intervals overlap",
    }
    return "; ".join(words[h] for h in sorted(how)) or "equal values"


def noisy_text(choice: Row, prefer: str, c: Optional[Constraints], broke_a_tie: bool) -> str:
    """Says when the speed that decided (prefer=speed, or the tie-break of prefer=quality) varied over the
    repeats more than benchmark.noisy_cv."""
    from runner.report.ties import noisy

    if prefer == "size" or (prefer == "quality" and not broke_a_tie):
        return ""
    n = speed_metric(choice, c)
    if not (noisy(choice, n) or noisy(choice, _spread_base(n))):
        return ""
    return (
        f"; the speed that {'decided' if prefer == 'speed' else 'broke the tie'} ({M.get(n).header}) varied over "
        "the repeats more than benchmark.noisy_cv: rerun on a quieter machine or with more repeats before relying on it"
    )


def _spread_base(name: str) -> str:
    """The per-repeat speed whose spread (CV) stands for `name`'s: decode speed for an offline throughput."""
    return M.PERF_DECODE_TOK_S if name == M.PERF_THROUGHPUT_TOK_S else name
