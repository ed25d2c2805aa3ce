"""Capacity under an SLO: the largest concurrency at which one server still meets benchmark.slo.

What vLLM's serve_sla and GuideLLM's goodput profile do for one server, here for every format of a
sweep. A probe is a closed-loop load at c users on the running server; it meets the SLO when every
bound in benchmark.slo holds at the 95th percentile (timed-out requests counted at their timeout,
runner/benchmark/loadgen.py) and (failed + not sent) / requests <= benchmark.capacity.max_failure_rate.
The search starts from the scenario's own load (already measured: probe one is free), doubles while
probes pass, then bisects between the largest passing and the smallest failing concurrency. It is
bounded: at most max_users users, max_probes loads, max_requests requests and max_total_s seconds in
all; a search cut short reports the largest passing concurrency as a lower bound (bracketed = 0). A probe that the
search's time budget (max_total_s) cut short is "not measured": it neither meets nor misses the SLO, and the search
stops there (stopped_by max_total_s). A Poisson load is not a closed-loop probe: such a scenario's search starts with
a closed-loop probe at its own user count.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from runner.metrics import (
    CAPACITY_BRACKETED,
    CAPACITY_MAX_USERS,
    CAPACITY_PROBES,
    CAPACITY_SEARCH_S,
    SERVING_FAILURE_RATE,
    SERVING_LATENCY_S_P95,
    SERVING_THROUGHPUT_TOK_S,
    SERVING_TPOT_S_P95,
    SERVING_TTFT_S_P95,
    SLO_METRIC,
)
from runner.tracking import capacity_csv

SLO_BOUNDS = ("ttft_s", "tpot_s", "latency_s")  # benchmark.slo: each held against SLO_METRIC["serving"][bound]


@dataclass
class Probe:
    users: int
    requests: int
    metrics: Dict[str, float]
    misses: List[str]  # the bounds it breaks; empty: it meets the SLO
    seconds: float = 0.0
    measured: bool = True  # False: the search's time budget cut the load short; it says nothing about the SLO

    @property
    def meets(self) -> bool:
        return self.measured and not self.misses

    @property
    def verdict(self) -> str:
        if not self.measured:
            return "not measured: cut short by capacity.max_total_s"
        return "meets the SLO" if self.meets else "; ".join(self.misses)


def stopped_by_duration(status: str, error: Optional[str]) -> bool:
    """A request that the load's time cap ended (not sent, or cancelled in flight) -- not one the server failed."""
    return status == "not_sent" or "max_duration_s" in (error or "")


@dataclass
class Capacity:
    max_users: int  # largest concurrency that met the SLO (0: not even one user)
    bracketed: bool  # the next concurrency up was measured to miss it (else max_users is a lower bound)
    probes: List[Probe] = field(default_factory=list)
    stopped_by: str = ""  # why the search ended before bracketing: max_users, max_probes, max_requests, max_total_s
    search_s: float = 0.0


def admitted_sequences(bench_cfg) -> int:
    """Concurrent sequences a server must admit: the load's concurrency, or benchmark.capacity.max_users when the
    capacity search runs on the same server (a server capped below it would make "max users" measure the cap)."""
    users = max(int(bench_cfg.concurrency), 1)
    c = bench_cfg.get("capacity")
    if c is not None and c.enabled:
        users = max(users, int(c.max_users))
    return users


def misses(metrics: Dict[str, float], slo, max_failure_rate: float) -> List[str]:
    """The SLO bounds a load's metrics break (p95s; a missing percentile -- no request finished -- breaks its bound)."""
    out = []
    for key in SLO_BOUNDS:
        name = SLO_METRIC["serving"][key]
        bound = slo[key] if hasattr(slo, "__getitem__") else getattr(slo, key)
        if bound is None:
            continue
        value = metrics.get(name)
        if value is None or not value <= bound:
            out.append(f"{key[:-2]} p95 {'-' if value is None else f'{value:.3f}'} s > {bound:g} s")
    rate = metrics.get(SERVING_FAILURE_RATE)
    if rate is not None and rate > max_failure_rate:
        out.append(f"{100 * rate:.1f} % failed > {100 * max_failure_rate:.1f} %")
    return out


def requests_for(users: int, cfg) -> int:
    return max(users * cfg.requests_per_user, cfg.min_requests)


def search(run_probe: Callable[[int], Probe], cfg, first: Optional[Probe] = None, start_users: int = 1) -> Capacity:
    """Bounded bisection over concurrency. run_probe(c) loads the server at c users; `first` is a probe already run."""
    t0 = time.perf_counter()
    probes: List[Probe] = [first] if first is not None else []
    lo, hi = 0, None  # lo: largest concurrency that met the SLO; hi: smallest that missed it
    used = first.requests if first is not None else 0

    def record(p: Probe) -> None:
        nonlocal lo, hi
        if not p.measured:
            return
        if p.meets:
            lo = max(lo, p.users)
        else:
            hi = p.users if hi is None else min(hi, p.users)

    if first is not None:
        record(first)
    c = min(max(start_users, 1), cfg.max_users) if first is None else None
    stopped_by = ""
    while True:
        if c is None:  # next concurrency to try
            if hi is None:
                if lo >= cfg.max_users:
                    stopped_by = "max_users"
                    break
                c = min(max(2 * lo, 1), cfg.max_users)
            else:
                if hi - lo <= 1:
                    break
                c = (lo + hi) // 2
        if len(probes) >= cfg.max_probes:
            stopped_by = "max_probes"
            break
        if used + requests_for(c, cfg) > cfg.max_requests:
            stopped_by = "max_requests"
            break
        if time.perf_counter() - t0 >= cfg.max_total_s:
            stopped_by = "max_total_s"
            break
        p = run_probe(c)
        probes.append(p)
        used += p.requests
        record(p)
        if not p.measured:
            stopped_by = "max_total_s"
            break
        c = None
    bracketed = hi is not None and hi - lo <= 1
    return Capacity(lo, bracketed, probes, "" if bracketed else stopped_by, time.perf_counter() - t0)


def metrics_of(cap: Capacity) -> Dict[str, float]:
    return {
        CAPACITY_MAX_USERS: float(cap.max_users),
        CAPACITY_BRACKETED: float(cap.bracketed),
        CAPACITY_PROBES: float(len(cap.probes)),
        CAPACITY_SEARCH_S: cap.search_s,
    }


def write_csv(cap: Capacity, path: Path) -> None:
    """capacity.csv: one row per probe, in the order run (the report's plot of users vs P95 reads it back)."""
    rows = []
    for p in cap.probes:
        m = p.metrics
        rows.append(
            {
                "users": p.users,
                "requests": p.requests,
                "meets_slo": int(p.meets) if p.measured else "",
                "misses": "; ".join(p.misses) if p.measured else p.verdict,
                "ttft_s_p95": m.get(SERVING_TTFT_S_P95, ""),
                "latency_s_p95": m.get(SERVING_LATENCY_S_P95, ""),
                "tpot_s_p95": m.get(SERVING_TPOT_S_P95, ""),
                "failure_rate": m.get(SERVING_FAILURE_RATE, ""),
                "throughput_tok_s": m.get(SERVING_THROUGHPUT_TOK_S, ""),
                "seconds": round(p.seconds, 3),
            }
        )
    capacity_csv.write(rows, path)
