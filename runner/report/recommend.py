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
bound rejects a format. A format whose job failed is rejected with its error.
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
from runner.report.ties import quality_key

GIB = 1024**3


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


def on_gpu(row: Row) -> bool:
    device = row.params.get("hardware.device")
    return str(device).startswith("cuda") if device else row.get(M.PERF_PEAK_VRAM_BYTES) is not None


def memory(row: Row) -> Optional[float]:
    return measured_memory(row)[0]


def measured_memory(row: Row) -> Tuple[Optional[float], str]:
    """(bytes, what they are): peak VRAM on a GPU run; else peak PSS (a process tree's shared pages once), peak RSS,
    or the file size, the first logged."""
    if on_gpu(row):
        return row.get(M.PERF_PEAK_VRAM_BYTES) or None, "peak VRAM"
    for name, what in (
        (M.PERF_PEAK_PSS_BYTES, "peak PSS"),
        (M.PERF_PEAK_RSS_BYTES, "peak RSS"),
        (M.SIZE_BYTES, "file size"),
    ):
        if row.get(name):
            return row.get(name), what
    return None, "not measured"


def memory_violation(row: Row, limit: Optional[float]) -> Optional[str]:
    """The memory bound, held against the larger of the measured peak (memory()) and the computed need (weights +
    KV cache at the benchmark's users x context, memory/need_bytes), saying which it was. A computed need within
    the bound does not stand in for a peak that was not measured."""
    if limit is None:
        return None
    (measured, what), computed = measured_memory(row), row.get(M.MEMORY_NEED_BYTES)
    if computed is not None and computed > limit and (measured is None or computed >= measured):
        seen = f"; {what} {measured / GIB:.2f} GiB" if measured is not None else ""
        return f"needs {computed / GIB:.2f} GiB > {limit / GIB:.2f} GiB (computed: weights + KV cache{seen})"
    if measured is None:
        return "memory not measured"
    if measured > limit:
        seen = f"; computed need {computed / GIB:.2f} GiB" if computed is not None else ""
        return f"needs {measured / GIB:.2f} GiB > {limit / GIB:.2f} GiB ({what}{seen})"
    return None


def _served_or(row: Row, serving: str, offline: str) -> str:
    """The serving benchmark's metric where this run measured it, else the offline one."""
    return serving if row.get(serving) is not None else offline


def throughput_metric(row: Row, c: Optional[Constraints] = None) -> str:
    if c is not None and c.scenario is not None:
        return M.SLO_METRIC[c.scenario.kind]["throughput"]
    return _served_or(row, M.SERVING_THROUGHPUT_TOK_S, M.PERF_DECODE_TOK_S)


def latency_metric(row: Row, c: Optional[Constraints] = None) -> str:
    if c is not None and c.scenario is not None:
        return M.SLO_METRIC[c.scenario.kind]["latency_s"]
    return _served_or(row, M.SERVING_LATENCY_S_P95, M.PERF_LATENCY_S_P95)


def throughput(row: Row, c: Optional[Constraints] = None) -> Optional[float]:
    return row.get(throughput_metric(row, c))


def latency_p95(row: Row, c: Optional[Constraints] = None) -> Optional[float]:
    return row.get(latency_metric(row, c))


FEW_REPEATS = 20  # a p95 over fewer repeats is (close to) their maximum


def p95_words(row: Row, name: str) -> str:
    """'p95', or for the offline single stream over few repeats what that p95 really is."""
    if name != M.PERF_LATENCY_S_P95:
        return "p95"
    try:
        n = int(float(row.params.get("benchmark.repeats", "")))
    except ValueError:
        return "p95"
    return f"p95 of only {n} repeats (about their max)" if n < FEW_REPEATS else "p95"


def failure_rate(row: Row) -> Optional[float]:
    """(failed + not sent) / requests of a serving run (older runs: from the counts); None for other runs."""
    if row.get(M.SERVING_FAILURE_RATE) is not None:
        return row.get(M.SERVING_FAILURE_RATE)
    counts = [row.get(n) for n in (M.SERVING_REQUESTS_OK, M.SERVING_REQUESTS_FAILED, M.SERVING_REQUESTS_NOT_SENT)]
    if any(v is None for v in counts) or not sum(counts):
        return None
    return (counts[1] + counts[2]) / sum(counts)


def _fmt(name: str, value: float) -> str:
    return M.get(name).format(value)


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def like_scenario(row: Row, c: Constraints) -> Optional[str]:
    """None when the run may be judged against c's scenario, else why not (hardware, or the load it ran)."""
    d = c.scenario
    if d is None:
        return None
    hw = row.params.get("hardware.name")
    if hw is not None and hw != d.hardware:
        return f"measured on hardware '{hw}', the scenario is for '{d.hardware}'"
    from runner.report.scenario import mismatch

    return mismatch(row.params, d)


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
            lambda v, lim: f"{p95_words(row, lat)} {_fmt(lat, v)} s > {lim:g} s",
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
                lambda v, lim, what=what, name=name: f"{what} {_fmt(name, v)} s > {lim:g} s",
            )
        )
    checks += [
        (
            "throughput",
            c.min_throughput_tok_s,
            throughput(row, c),
            lambda v, lim: v >= lim,
            lambda v, lim: f"{_fmt(throughput_metric(row, c), v)} tok/s < {lim:g}",
        ),
        (
            "failure rate",
            c.max_failure_rate,
            failure_rate(row),
            lambda v, lim: v <= lim,
            lambda v, lim: f"{_pct(v)} of requests failed or not sent > {_pct(lim)}",
        ),
        (
            "Δppl",
            c.max_ppl_delta_pct,
            row.get(M.QUALITY_PPL_DELTA_PCT),
            lambda v, lim: v <= lim,
            lambda v, lim: f"Δppl {_fmt(M.QUALITY_PPL_DELTA_PCT, v)} % > {lim:g} %",
        ),
        (
            "KLD",
            c.max_kld,
            row.get(M.QUALITY_KLD_MEAN),
            lambda v, lim: v <= lim,
            lambda v, lim: f"KLD {_fmt(M.QUALITY_KLD_MEAN, v)} > {lim:g}",
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
    ordered, ties = _leader_ties(rows, prefer, c)
    tie_break = quality_key if prefer == "speed" else (lambda r: speed_key(r, c))
    return sorted(ties, key=tie_break) + [r for r in ordered if not any(r is t for t in ties)]


def _leader_ties(rows: List[Row], prefer: str, c: Optional[Constraints]) -> Tuple[List[Row], List[Row]]:
    """(rows ordered by the deciding metric alone, the best of them and the rows tied with it)."""
    if prefer == "size":  # memory has no interval: no ties
        ordered = sorted(rows, key=lambda r: (memory(r) or float("inf"), quality_key(r)))
        return ordered, ordered[:1]
    ordered = sorted(rows, key=(lambda r: speed_key(r, c)) if prefer == "speed" else quality_key)
    best, name = ordered[0], deciding_metric(ordered[0], prefer, c)
    return ordered, [r for r in ordered if r is best or tied(r, best, name)]


def _facts(row: Row, c: Constraints) -> str:
    kld, dppl, p95, tput = (
        row.get(M.QUALITY_KLD_MEAN),
        row.get(M.QUALITY_PPL_DELTA_PCT),
        latency_p95(row, c),
        throughput(row, c),
    )
    fr = failure_rate(row) if c.scenario is not None else None
    facts = [
        f"KLD {_fmt(M.QUALITY_KLD_MEAN, kld)}" if kld is not None else None,
        f"Δppl {_fmt(M.QUALITY_PPL_DELTA_PCT, dppl)} %" if dppl is not None else None,
        f"{_fmt(throughput_metric(row, c), tput)} tok/s" if tput else None,
        f"{p95_words(row, latency_metric(row, c))} {_fmt(latency_metric(row, c), p95)} s" if p95 is not None else None,
        f"{_pct(fr)} failed" if fr is not None else None,
        f"{memory(row) / GIB:.2f} GiB" if memory(row) else None,
    ]
    return ", ".join(f for f in facts if f)


def recommend(rows: List[Row], c: Constraints, prefer: str = "quality") -> Dict:
    """{'choice': Row | None, 'runner_up', 'reason': one line, 'feasible': ranked, 'rejected': {label: [why...]},
    'ties': labels tied with the choice, 'set_aside': labels of runs not measured like the scenario (another run of
    the same format was)}."""
    finished = [r for r in rows if r.status == "FINISHED"]
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
    ordered, tied_best = _leader_ties(feasible, prefer, c)
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
        f"({_facts(choice, c)}){tie_text}{_noisy_text(choice, prefer, c, bool(ties))}"
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


def _noisy_text(choice: Row, prefer: str, c: Optional[Constraints], broke_a_tie: bool) -> str:
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


def deploy_lines(choice: Row) -> List[str]:
    """The server command the benchmark measured for the chosen format, to deploy it as it was measured."""
    from runner.tracking import SERVER_COMMAND_TAG, SERVER_TAG

    server = choice.tags.get(SERVER_TAG)
    if server is None:
        engine = choice.params.get("format.engine", "?")
        return ["", f"Measured offline on the {engine} engine, not behind a server: no server command to deploy."]
    command = choice.tags.get(SERVER_COMMAND_TAG)
    where = "artifacts/serving/server_command.sh of its run"
    if command is None:
        return ["", f"Deploy it as measured: the {server} command is in {where}."]
    return [
        "",
        f"Deploy it as measured ({server}, the command the benchmark ran; also in {where}):",
        "",
        "```sh",
        command,
        "```",
    ]


def scenario_bounds(c: Constraints) -> List[str]:
    """The scenario's bounds in words."""
    out = []
    for what, v in (
        ("TTFT p95", c.max_ttft_p95_s),
        ("TPOT p95", c.max_tpot_p95_s),
        ("latency p95", c.max_latency_p95_s),
    ):
        if v is not None:
            out.append(f"{what} ≤ {v:g} s")
    if c.min_throughput_tok_s is not None:
        out.append(f"throughput ≥ {c.min_throughput_tok_s:g} tok/s")
    if c.max_failure_rate is not None:
        out.append(f"failed or unsent ≤ {_pct(c.max_failure_rate)}")
    if c.memory_bytes is not None:
        out.append(f"memory ≤ {c.memory_bytes / GIB:.2f} GiB")
    if c.max_ppl_delta_pct is not None:
        out.append(f"Δppl ≤ {c.max_ppl_delta_pct:g} %")
    if c.max_kld is not None:
        out.append(f"KLD ≤ {c.max_kld:g}")
    return out


def capacity_lines(rows: List[Row]) -> List[str]:
    """'gguf_q4_k_m holds the SLO up to 3 users' for every run that searched its capacity."""
    out = []
    for r in rows:
        n = r.get(M.CAPACITY_MAX_USERS)
        if n is None:
            continue
        exact = r.get(M.CAPACITY_BRACKETED) == 1
        text = (
            f"{r.label} holds the SLO up to {n:.0f} user{'s' * (n != 1)}"
            if n >= 1
            else f"{r.label} misses the SLO even at 1 user"
        )
        out.append(text + ("" if exact or n < 1 else " (at least: the search stopped before a load that misses it)"))
    return out


def decision_text(result: Dict, c: Constraints, rows: List[Row]) -> str:
    """The recommendation as Markdown: choice, why, runner-up, every rejected format with what it breaks, capacity."""
    d = c.scenario
    lines = []
    if d is not None:
        from runner.report.scenario import describe_load

        lines += [
            f"# Deployment scenario `{d.name}`",
            "",
            f"{d.description}".strip(),
            "",
            f"- load: {describe_load(d)} on hardware `{d.hardware}`",
            f"- bounds: {'; '.join(scenario_bounds(c)) or 'none'}",
            f"- preference: {d.prefer}",
            "",
        ]
    choice = result["choice"]
    if choice is None:
        lines += ["## No recommendation", "", "No format meets every bound of the scenario."]
    else:
        lines += [f"## Recommendation: {choice.label}", "", f"Why: {result['reason']}."]
        if result["runner_up"] is not None:
            lines += ["", f"Runner-up: {result['runner_up'].label} ({_facts(result['runner_up'], c)})."]
        lines += deploy_lines(choice)
    if result["rejected"]:
        lines += ["", "## Rejected", ""] + [f"- {label}: {'; '.join(why)}" for label, why in result["rejected"].items()]
    if result["set_aside"]:
        lines += [
            "",
            f"Not judged (measured under another load; the format's run under the scenario's load was): "
            f"{', '.join(result['set_aside'])}.",
        ]
    cap = capacity_lines([r for r in rows if r.status == "FINISHED"])
    if cap:
        lines += ["", "## Capacity (largest concurrency within the SLO)", ""] + [f"- {x}" for x in cap]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def without_scenario_text(rows: List[Row]) -> str:
    """What the sweep can honestly say without a deployment scenario: the leaders per axis, with ties."""
    finished = [r for r in rows if r.status == "FINISHED"]
    lines = [
        "## No deployment scenario",
        "",
        "Nothing to check the formats against (no SLO, no memory budget, no quality floor): pass "
        "`deployment=<scenario>` (conf/deployment/) for a decision. What the measurements say:",
        "",
    ]
    c = Constraints()
    quality = [
        r for r in finished if r.get(M.QUALITY_KLD_MEAN) is not None or r.get(M.QUALITY_PPL_DELTA_PCT) is not None
    ]
    groups = [
        ("best quality (KLD vs the baseline, then Δppl)", "quality", quality),
        ("smallest in memory", "size", [r for r in finished if memory(r)]),
    ]
    from runner.report.scenario import run_load

    loads: Dict[str, List[Row]] = {}
    for r in finished:  # speed only compares runs measured under the same load
        if throughput(r):
            loads.setdefault(f"{run_load(r.params)} on {r.params.get('hardware.name', '?')}", []).append(r)
    groups += [(f"fastest under {load}", "speed", rs) for load, rs in loads.items()]
    for what, prefer, usable in groups:
        if not usable:
            continue
        ordered, tied_best = _leader_ties(usable, prefer, c)
        leader = rank(usable, prefer, c)[0]
        ties = [r.label for r in tied_best if r is not leader]
        lines.append(
            f"- {what}: {leader.label} ({_facts(leader, c)})"
            + (f" ≈ {', '.join(ties)}" if ties else "")
            + _noisy_text(leader, prefer, c, bool(ties))
        )
    cap = capacity_lines(finished)
    if cap:
        lines += [""] + [f"- {x}" for x in cap]
    return "\n".join(lines) + "\n"
