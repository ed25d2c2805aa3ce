"""Whether a run was measured under a deployment scenario's load: its logged params against the scenario's.

Like with like: latency and throughput are held against the scenario only when the run was measured
with the same benchmark kind, prompt and output lengths, and for kind=serving the same concurrency and
arrival pattern (and rate), the same request timeout and at least as many requests, and the same engine
threads where the scenario fixes them -- runner/config/deployment.py defines the scenario itself.
"""

from typing import Dict, Optional


def describe_load(d) -> str:
    """The scenario's load in words, e.g. 'serving, 4 users, closed loop, 128+32 tokens'."""
    if d.kind == "offline":
        return f"offline single stream, {d.prompt_tokens}+{d.output_tokens} tokens"
    arrival = "closed loop" if d.arrival == "closed" else f"poisson {d.rate:g} req/s"
    return f"serving, {d.users} user{'s' * (d.users != 1)}, {arrival}, {d.prompt_tokens}+{d.output_tokens} tokens"


def run_load(params: Dict[str, str]) -> str:
    """A run's load in words, from its logged params."""
    p = params
    tokens = f"{p.get('benchmark.prompt_tokens', '?')}+{p.get('benchmark.gen_tokens', '?')} tokens"
    if p.get("benchmark.kind", "offline") == "offline":
        return (
            f"offline single stream, {tokens}" if "benchmark.prompt_tokens" in p else "a load its params do not record"
        )
    arrival = (
        "closed loop" if p.get("benchmark.arrival") == "closed" else f"poisson {_num(p.get('benchmark.rate'))} req/s"
    )
    return f"serving, {p.get('benchmark.concurrency', '?')} users, {arrival}, {tokens}"


def mismatch(params: Dict[str, str], d) -> Optional[str]:
    """None when the run (its logged params) was measured under the scenario's load, else what differs."""
    p = params
    wanted = {
        "benchmark.kind": d.kind,
        "benchmark.prompt_tokens": d.prompt_tokens,
        "benchmark.gen_tokens": d.output_tokens,
    }
    if d.kind == "serving":
        wanted.update({"benchmark.concurrency": d.users, "benchmark.arrival": d.arrival})
        if d.arrival == "poisson":
            wanted["benchmark.rate"] = d.rate
        wanted["benchmark.request_timeout_s"] = d.request_timeout_s
    if d.get("threads") is not None:
        wanted["hardware.threads"] = d.threads
    differs = [k for k, v in wanted.items() if _num(p.get(k, "offline" if k == "benchmark.kind" else None)) != _num(v)]
    if differs:
        return f"measured as {run_load(p)}, not as the scenario's {describe_load(d)}{_details(differs, p, wanted)}"
    if d.kind == "serving" and _count(p.get("benchmark.requests")) < d.requests:
        return (
            f"measured with {p.get('benchmark.requests', 'an unrecorded number of')} requests, fewer than the "
            f"scenario's {d.requests} (its p95 and failure rate are too coarse)"
        )
    return None


def server_mismatch(format_name: str, tags: Dict[str, str], d) -> Optional[str]:
    """None unless the scenario names the server this format deploys with (deployment.servers) and the run was
    served by another one."""
    from runner.tracking import SERVER_TAG

    wanted = (d.get("servers") or {}).get(format_name) if d.kind == "serving" else None
    served = tags.get(SERVER_TAG)
    if wanted and served and served != wanted:
        return f"served by {served}; the scenario deploys {format_name} with {wanted} (deployment.servers)"
    return None


def _details(differs, params: Dict[str, str], wanted) -> str:
    """What differs beyond the load in words: the request timeout and the engine threads."""
    extra = [k for k in differs if k in ("benchmark.request_timeout_s", "hardware.threads")]
    return "".join(f"; {k} {params.get(k, 'unrecorded')}, the scenario's {_num(wanted[k])}" for k in extra)


def _count(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def _num(v) -> str:
    """Params are strings: compare 4 and '4', 2.0 and '2' alike."""
    try:
        return f"{float(v):g}"
    except (TypeError, ValueError):
        return str(v)
