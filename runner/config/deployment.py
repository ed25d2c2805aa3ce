"""A deployment scenario (conf/deployment/<name>.yaml): what the sweep's decision is checked against.

A scenario states the hardware profile, the load (benchmark kind, users, arrival pattern, prompt and
output lengths, requests), the SLOs, a minimum throughput, a memory budget, a quality floor and the
largest share of failed requests. Its YAML also sets the benchmark from these values, so
`qrun -m ... deployment=<name>` measures every format under the scenario's load, and the sweep
ends with the recommendation (runner/report/recommend.py).

Like with like: a run's latency and throughput are only held against the scenario when the run was
measured under the scenario's load -- the same benchmark kind, prompt and output lengths, and for
kind=serving the same concurrency, arrival pattern (and rate), request timeout and at least the scenario's
number of requests (a p95 of 4 requests is their maximum), and, where the scenario fixes them, the same engine
threads. A single-user scenario of kind
offline (an app that runs the engine in its own process) is checked against the offline benchmark,
which is one stream by construction; an offline p95 is never checked against a serving scenario, and
a serving run at another concurrency never against this one.
This module stays light (no MLflow, no Hydra): the report and the config schema import it.
"""

from dataclasses import dataclass, field
from typing import Dict, Optional

from omegaconf import MISSING

from runner.config.checks import BENCHMARK_KINDS
from runner.errors import UserError
from runner.paths import options

ARRIVALS = ("closed", "poisson")
PREFER = ("quality", "speed", "size")


@dataclass
class ScenarioSlo:
    """Bounds at the 95th percentile of the scenario's load, in seconds (null: no bound)."""

    ttft_s: Optional[float] = None  # send (poisson: scheduled arrival) -> first token
    tpot_s: Optional[float] = None  # time per output token after the first
    latency_s: Optional[float] = None  # send (poisson: scheduled arrival) -> last token


@dataclass
class CapacitySearchConfig:
    """benchmark.capacity: after the load, the largest concurrency that still meets benchmark.slo (at p95) and
    max_failure_rate, by bounded bisection over concurrency on the same server (runner/benchmark/capacity.py)."""

    enabled: bool = False
    max_users: int = 64  # the search never probes above this
    max_probes: int = 8  # loads in all, the scenario's own load included
    requests_per_user: int = 4  # a probe at c users sends max(c * this, min_requests) requests
    min_requests: int = 8
    max_requests: int = 2000  # all probes together
    max_total_s: float = 900.0  # all probes together; a probe that would start later is not run
    max_failure_rate: float = 0.0


@dataclass
class DeploymentConfig:
    name: str = MISSING
    description: str = ""
    hardware: str = "cpu"  # hardware profile (conf/hardware); runs measured on another profile are not judged
    kind: str = "serving"  # serving: a server under `users` concurrent users | offline: one stream in-process (users=1)
    users: int = 1  # concurrent users (serving: benchmark.concurrency)
    arrival: str = "closed"  # closed: each user sends when its last answer ended | poisson: `rate` requests/s
    rate: float = 1.0  # poisson only: mean requests per second
    prompt_tokens: int = 128
    output_tokens: int = 32
    requests: int = 32  # measured requests per format (serving); a run with fewer is not judged
    request_timeout_s: float = 120.0  # serving: a request not done by then fails; runs with another limit not judged
    threads: Optional[int] = None  # engine threads the deployment has; set: runs with other hardware.threads not judged
    slo: ScenarioSlo = field(default_factory=ScenarioSlo)
    min_throughput_tok_s: Optional[float] = None  # all users' output tokens per second of the load
    memory_budget_bytes: Optional[int] = None  # null: the hardware profile's memory_budget_bytes
    max_ppl_delta_pct: Optional[float] = None  # quality floor: perplexity change vs the baseline, in %
    max_kld: Optional[float] = None  # quality floor: mean KLD vs the baseline
    max_failure_rate: float = 0.0  # (failed + not sent) / requests above this rejects a format
    prefer: str = "quality"  # among formats that meet everything: quality | speed | size
    # per format name, the server it deploys with here (overrides format.server), e.g. {gguf_q4_k_m: llama_cpp_python}
    servers: Dict[str, str] = field(default_factory=dict)
    capacity_search: bool = False  # also find each format's largest concurrency within the SLO (benchmark.capacity)


def validate(d) -> None:
    """One-line UserError naming the first deployment.* key whose value cannot mean anything."""

    def bad(key, problem, fix):
        raise UserError(f"deployment.{key}", problem, fix)

    if d.kind not in BENCHMARK_KINDS:
        bad("kind", f"unknown kind '{d.kind}'", f"use one of {list(BENCHMARK_KINDS)}")
    if d.hardware not in options("hardware"):
        bad("hardware", f"no hardware profile '{d.hardware}'", f"use one of {options('hardware')}")
    if d.users < 1:
        bad("users", f"{d.users} users", "set at least 1")
    if d.kind == "offline":
        if d.users != 1:
            bad("users", f"kind=offline is one stream, {d.users} users asked", "use kind=serving for concurrent users")
        for key in ("ttft_s", "tpot_s"):
            if d.slo[key] is not None:
                bad(
                    f"slo.{key}",
                    "the offline benchmark measures no p95 of it (one stream, a few repeats)",
                    "use kind=serving with users=1, or set it to null",
                )
    if d.arrival not in ARRIVALS:
        bad("arrival", f"unknown arrival '{d.arrival}'", f"use one of {list(ARRIVALS)}")
    if d.arrival == "poisson" and not d.rate > 0:
        bad("rate", f"poisson arrivals need a rate > 0 (got {d.rate})", "set deployment.rate in requests/s")
    for key in ("prompt_tokens", "output_tokens", "requests"):
        if d[key] < 1:
            bad(key, f"{d[key]} is below 1", f"set deployment.{key} to 1 or more")
    if d.threads is not None and d.threads < 1:
        bad("threads", f"{d.threads} threads", "set at least 1, or null to leave them to the hardware profile")
    if not d.request_timeout_s > 0:
        bad("request_timeout_s", f"{d.request_timeout_s} is not a positive number", "set it in seconds, e.g. 120")
    for key in (
        "slo.ttft_s",
        "slo.tpot_s",
        "slo.latency_s",
        "min_throughput_tok_s",
        "memory_budget_bytes",
        "max_ppl_delta_pct",
        "max_kld",
    ):
        value = d.slo[key[4:]] if key.startswith("slo.") else d[key]
        if value is not None and not value > 0:
            bad(key, f"{value} is not a positive number", "set a positive bound, or null for none")
    if not 0 <= d.max_failure_rate <= 1:
        bad("max_failure_rate", f"{d.max_failure_rate} is outside [0, 1]", "use a share, e.g. 0.01")
    if d.prefer not in PREFER:
        bad("prefer", f"unknown preference '{d.prefer}'", f"use one of {list(PREFER)}")
    if d.capacity_search and d.kind != "serving":
        bad("capacity_search", "a capacity search varies concurrent users: it needs kind=serving", "set it to false")
