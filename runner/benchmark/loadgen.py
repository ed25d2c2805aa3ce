"""A bounded async load generator for OpenAI-compatible /v1/completions, streaming, loopback only.

Arrivals: `closed` = `concurrency` users, each sends its next request when its last one ends;
`poisson` = exponential gaps at `rate` requests/s (seeded, scheduled from the load's start, never from
when a slot freed up), at most `concurrency` in flight.
Each request streams, so the client sees every token as it comes. Times run from the request's
scheduled arrival (closed: its send; poisson: its place in the arrival schedule, so the wait for a free
slot is part of them -- no coordinated omission): TTFT = arrival -> first chunk that carries a token (text
or token ids); latency = arrival -> end of stream; TPOT = (latency - TTFT) / (tokens - 1).
Bounds: `requests` (capped at MAX_REQUESTS), `request_timeout_s` per request from its arrival, and
`max_duration_s` (capped at MAX_DURATION_S); when time is up, requests in flight are cancelled and count
as failed, unsent ones as not sent -- every request ends in exactly one of ok / failed / not_sent.
A request given up (its timeout, or the end of the load after it arrived) is `timed_out`: it counts in
the TTFT and latency percentiles at the time it was given up, so a server that stalls cannot look fast.
"""

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Optional

import httpx
import numpy as np

from runner.benchmark.servers.process import ServerSpec
from runner.config.checks import check_loopback
from runner.metrics import (
    SERVING_DURATION_S,
    SERVING_FAILURE_RATE,
    SERVING_GOODPUT_REQ_S,
    SERVING_LATENCY_S,
    SERVING_OUTPUT_TOKENS,
    SERVING_QUEUE_S_P95,
    SERVING_REQUESTS_FAILED,
    SERVING_REQUESTS_NOT_SENT,
    SERVING_REQUESTS_OK,
    SERVING_REQUESTS_PER_S,
    SERVING_REQUESTS_TIMED_OUT,
    SERVING_SLO_ATTAINMENT,
    SERVING_THROUGHPUT_TOK_S,
    SERVING_TPOT_S,
    SERVING_TTFT_S,
    member,
)

logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per request


@dataclass
class RequestResult:
    idx: int
    status: str = "not_sent"  # not_sent | ok | failed
    sent_s: float = float("nan")  # since the load started
    scheduled_s: float = float("nan")  # its arrival: poisson schedule (closed: = sent_s); times run from here
    timed_out: bool = False  # given up at request_timeout_s or the end of the load: in the percentiles at that time
    ttft_s: float = float("nan")
    latency_s: float = float("nan")
    tpot_s: float = float("nan")
    max_itl_s: float = float("nan")  # longest gap between two token chunks
    output_tokens: int = 0
    prompt_tokens: int = 0  # the prompt text tokenized by the base model's tokenizer
    error: str = ""
    server_timings: str = ""  # the server's own timings of this request, as JSON, where its stream has them


def payload(spec: ServerSpec, prompt, gen_tokens: int) -> Dict:
    return {
        "model": spec.model,
        "prompt": prompt,
        "max_tokens": gen_tokens,
        "temperature": 0.0,
        "stream": True,
        **spec.extra_body,
    }


async def _one(
    client: httpx.AsyncClient,
    url: str,
    body: Dict,
    res: RequestResult,
    t0: float,
    arrival: Optional[float],
    timeout_s: float,
) -> None:
    """Send one streaming request and fill res; never raises except on cancellation (then res says so).
    arrival: its scheduled arrival (poisson); None: it arrives as it is sent (closed loop)."""
    start = time.perf_counter()
    arrival = start if arrival is None else arrival
    res.sent_s, res.scheduled_s, res.status = start - t0, arrival - t0, "failed"
    times: List[float] = []
    chunks, usage_tokens, finish, server_timings = 0, None, None, None
    try:
        async with asyncio.timeout(max(arrival + timeout_s - start, 0.0)):
            async with client.stream("POST", url, json=body) as resp:
                if resp.status_code != 200:
                    res.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200].decode(errors='replace')}"
                    return
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage_tokens = chunk["usage"].get("completion_tokens")
                    server_timings = chunk.get("timings") or server_timings  # llama-server: on its last chunk
                    for choice in chunk.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        # A token arrived: text, or token ids without text (vLLM holds back the bytes of an
                        # incomplete UTF-8 character; its chunk still marks a token made at that time).
                        ids = choice.get("token_ids") or []
                        if choice.get("text") or ids:
                            times.append(time.perf_counter())
                            chunks += max(len(ids), 1)
    except asyncio.CancelledError:
        res.error = "cancelled: benchmark.max_duration_s reached"
        give_up(res, time.perf_counter() - arrival, times, arrival)
        raise
    except (TimeoutError, httpx.TimeoutException):
        res.error = f"timed out after {timeout_s:g} s (benchmark.request_timeout_s)"
        give_up(res, timeout_s, times, arrival)
        return
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"[:300]
        return
    end = time.perf_counter()
    if not times:
        res.error = f"no tokens in the response (finish_reason {finish})"
        return
    # usage when the server reports it; else a 'length' finish means max_tokens were made (a chunk may hold several)
    n = usage_tokens or (body["max_tokens"] if finish == "length" else chunks)
    res.status, res.output_tokens, res.error = "ok", int(n), ""
    res.server_timings = json.dumps(server_timings) if server_timings else ""
    res.ttft_s, res.latency_s = times[0] - arrival, end - arrival
    res.tpot_s = (res.latency_s - res.ttft_s) / (n - 1) if n > 1 else float("nan")
    res.max_itl_s = float(np.diff(times).max()) if len(times) > 1 else float("nan")


def give_up(res: RequestResult, waited_s: float, times: List[float], arrival: float) -> None:
    """A request abandoned after waiting waited_s since its arrival: it counts in the percentiles at that wait."""
    res.timed_out, res.latency_s = True, waited_s
    res.ttft_s = times[0] - arrival if times else waited_s


async def run_load(
    spec: ServerSpec,
    prompts: List,  # texts, or token-id lists for a server that takes ids (ServerSpec.prompt_ids)
    cfg,
    prompt_tokens: Optional[List[int]] = None,
    seed: int = 0,
    sequential: bool = False,
) -> List[RequestResult]:
    """Send len(prompts) requests (one each) as cfg.arrival says (sequential: one user, closed loop);
    return one result per request, in order."""
    check_loopback(spec.host)
    concurrency, arrival = (1, "closed") if sequential else (cfg.concurrency, cfg.arrival)
    results = [RequestResult(i, prompt_tokens=(prompt_tokens or [0] * len(prompts))[i]) for i in range(len(prompts))]
    url = spec.url + "/v1/completions"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(cfg.request_timeout_s, connect=10.0)
    tasks: set[asyncio.Task] = set()
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:  # no proxy, ever
        t0 = time.perf_counter()

        def send(i: int, arrival: Optional[float]) -> asyncio.Task:
            body = payload(spec, prompts[i], cfg.gen_tokens)
            task = asyncio.ensure_future(_one(client, url, body, results[i], t0, arrival, cfg.request_timeout_s))
            tasks.add(task)
            return task

        async def closed_user(queue: List[int]) -> None:
            while queue:
                await send(queue.pop(0), None)

        async def poisson() -> None:
            gate = asyncio.Semaphore(concurrency)
            # the schedule is fixed up front: a slow server delays sends, never arrivals
            arrivals = t0 + arrival_offsets(len(prompts), cfg.rate, seed)

            async def gated(i: int) -> None:
                try:
                    async with gate:
                        await send(i, arrivals[i])
                except asyncio.CancelledError:
                    if results[i].status == "not_sent":  # arrived, still waiting for a slot at the end of the load
                        results[i].scheduled_s, results[i].error = (
                            arrivals[i] - t0,
                            "not sent: no free slot before the end of the load",
                        )
                        give_up(results[i], time.perf_counter() - arrivals[i], [], arrivals[i])
                    raise

            for i in range(len(prompts)):
                await asyncio.sleep(max(arrivals[i] - time.perf_counter(), 0.0))
                tasks.add(asyncio.ensure_future(gated(i)))

        if arrival == "closed":
            queue = list(range(len(prompts)))
            drivers = [asyncio.ensure_future(closed_user(queue)) for _ in range(min(concurrency, len(prompts)))]
        else:
            drivers = [asyncio.ensure_future(poisson())]
        deadline = t0 + cfg.max_duration_s
        await asyncio.wait(drivers, timeout=max(deadline - time.perf_counter(), 0))
        while True:  # drivers done (or time up): wait for what is still in flight, within the deadline
            pending = [t for t in tasks | set(drivers) if not t.done()]
            left = deadline - time.perf_counter()
            if not pending or left <= 0:
                break
            await asyncio.wait(pending, timeout=left)
        for t in tasks | set(drivers):
            t.cancel()
        await asyncio.gather(*tasks, *drivers, return_exceptions=True)
    return results


def arrival_offsets(n: int, rate: float, seed: int = 0) -> np.ndarray:
    """Poisson arrivals: seconds from the load's start of each of n requests (the first at 0)."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])]) if n else np.zeros(0)


def summarize(results: List[RequestResult], slo) -> Dict[str, float]:
    """serving/* metrics (declared in runner/metrics.py): TTFT and latency percentiles over ok requests and those
    given up (at the time they were given up), TPOT over ok requests, counts over all."""
    ok = [r for r in results if r.status == "ok"]
    waited = [r for r in results if r.status == "ok" or r.timed_out]
    m: Dict[str, float] = {
        SERVING_REQUESTS_OK: len(ok),
        SERVING_REQUESTS_FAILED: sum(r.status == "failed" for r in results),
        SERVING_REQUESTS_NOT_SENT: sum(r.status == "not_sent" for r in results),
        SERVING_REQUESTS_TIMED_OUT: sum(r.timed_out for r in results),
    }
    m[SERVING_FAILURE_RATE] = (len(results) - len(ok)) / len(results) if results else float("nan")
    ttft = np.array([r.ttft_s for r in waited])
    lat = np.array([r.latency_s for r in waited])
    tpot = np.array([r.tpot_s for r in ok if not np.isnan(r.tpot_s)])
    queued = [r.sent_s - r.scheduled_s for r in results if r.status != "not_sent" and not np.isnan(r.scheduled_s)]
    if any(queued):  # poisson: the wait for a free slot (closed loop: none by construction)
        m[SERVING_QUEUE_S_P95] = float(np.percentile(queued, 95))
    for base, x in ((SERVING_TTFT_S, ttft), (SERVING_TPOT_S, tpot), (SERVING_LATENCY_S, lat)):
        if len(x):  # no successful request: no percentiles (the counts say why)
            m.update({member(base, f"p{q}"): float(np.percentile(x, q)) for q in (50, 95, 99)})
            m[member(base, "mean")] = float(x.mean())
    sent = [r for r in results if r.status != "not_sent"]
    if ok:
        duration = max(r.scheduled_s + r.latency_s for r in ok) - min(r.sent_s for r in sent)
        tokens = sum(r.output_tokens for r in ok)
        m.update(
            {
                SERVING_DURATION_S: duration,
                SERVING_OUTPUT_TOKENS: tokens,
                SERVING_THROUGHPUT_TOK_S: tokens / duration,
                SERVING_REQUESTS_PER_S: len(ok) / duration,
                SERVING_GOODPUT_REQ_S: sum(_meets(r, slo) for r in ok) / duration,
            }
        )
    m[SERVING_SLO_ATTAINMENT] = sum(_meets(r, slo) for r in ok) / len(results) if results else float("nan")
    return m


def _meets(r: RequestResult, slo) -> bool:
    for key, value in (("ttft_s", r.ttft_s), ("tpot_s", r.tpot_s), ("latency_s", r.latency_s)):
        bound = getattr(slo, key, None)
        if bound is not None and not (value <= bound):
            return False
    return True


def write_csv(results: List[RequestResult], path) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[x.name for x in fields(RequestResult)])
        w.writeheader()
        for r in results:
            w.writerow(asdict(r))
