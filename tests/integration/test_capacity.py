"""Capacity search and latency accounting against a real server on 127.0.0.1 throttled by the test.

The server (tests/throttled_server.py) serves one request at a time, each taking a service time the
test sets, so the right answers are known: c closed-loop users see ~c x S of latency; Poisson arrivals
faster than 1/S queue, and their latency must include that queue (no coordinated omission).
"""

import asyncio

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import throttled_spec
from runner.benchmark import capacity as cap
from runner.benchmark.loadgen import arrival_offsets, run_load, summarize
from runner.benchmark.servers import ServerProcess
from runner.benchmark.serving import capacity_search, window_starts
from runner.config.deployment import CapacitySearchConfig
from runner.config.schema import BenchmarkConfig
from runner.errors import UserError


def _bench(**over):
    return OmegaConf.merge(
        OmegaConf.structured(BenchmarkConfig(name="t")), {"gen_tokens": 4, "prompt_tokens": 8, **over}
    )


@pytest.fixture
def throttled(tmp_path):
    servers = []

    def start(service_s: float, fail_every: int = 0, held_back: int = 0) -> ServerProcess:
        spec = throttled_spec(service_s, fail_every, held_back)
        server = ServerProcess(spec, tmp_path / f"throttled{len(servers)}.log").start()
        servers.append(server)
        server.wait_healthy(30)
        return server

    yield start
    for s in servers:
        s.stop()


class _Tokenizer:
    """Prompts are irrelevant to the throttled server: ids become words, one token per word."""

    def decode(self, ids):
        return " ".join(f"w{i}" for i in ids)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_capacity_search_finds_the_known_limit(throttled):
    """0.4 s per request, one at a time: 3 users see ~1.2 s at P95, 4 users ~1.6 s; the SLO is 1.4 s -> 3 users.
    (Half a service time of margin on both sides: a busy 2-core machine adds its own delays.)"""
    server = throttled(0.4)
    cfg = _bench(
        concurrency=1,
        requests=3,
        slo={"latency_s": 1.4},
        capacity={"enabled": True, "max_users": 8, "requests_per_user": 2, "min_requests": 3},
    )
    stream = type("Stream", (), {"ids": np.arange(4000)})()
    tok = _Tokenizer()
    first = summarize(asyncio.run(run_load(server.spec, [f"p{i}" for i in range(3)], cfg)), cfg.slo)
    found = capacity_search(server, stream, tok, cfg, first, used=3)
    users = [p.users for p in found.probes]
    assert (found.max_users, found.bracketed) == (3, True), [
        (p.users, p.metrics.get("serving/latency_s_p95")) for p in found.probes
    ]
    assert users == [1, 2, 4, 3]  # the scenario's load, doubling, then bisection
    p95 = {p.users: p.metrics["serving/latency_s_p95"] for p in found.probes}
    assert p95[4] > 1.4 >= p95[3] > p95[2] > p95[1] >= 0.4
    assert cap.metrics_of(found)["capacity/max_users"] == 3


def test_capacity_search_is_bounded():
    """Probes, requests and time are capped; a search cut short reports a lower bound, never an exact limit."""

    def always_meets(users):
        return cap.Probe(users, 10, {"serving/latency_s_p95": 0.1, "serving/failure_rate": 0.0}, [])

    limits = OmegaConf.structured(
        CapacitySearchConfig(max_users=1000, max_probes=4, requests_per_user=1, min_requests=10)
    )
    found = cap.search(always_meets, limits, start_users=1)
    assert [p.users for p in found.probes] == [1, 2, 4, 8] and found.max_users == 8
    assert not found.bracketed and found.stopped_by == "max_probes"
    limits.max_probes, limits.max_requests = 100, 35
    found = cap.search(always_meets, limits, start_users=1)
    assert len(found.probes) == 3 and found.stopped_by == "max_requests"
    limits.max_requests, limits.max_users = 10**6, 5
    found = cap.search(always_meets, limits, start_users=1)
    assert [p.users for p in found.probes] == [1, 2, 4, 5] and found.stopped_by == "max_users" and found.max_users == 5


def test_poisson_latency_runs_from_the_scheduled_arrival(throttled):
    """Arrivals at 20/s into a server that serves 10/s, one slot: requests queue, and the queue is in their latency.

    Measured from the send (when a slot freed up), every request would look like ~0.1 s: coordinated omission.
    """
    service_s, rate, n = 0.1, 20.0, 12
    server = throttled(service_s)
    cfg = _bench(arrival="poisson", rate=rate, concurrency=1, requests=n)
    res = asyncio.run(run_load(server.spec, [f"p{i}" for i in range(n)], cfg))
    assert [r.status for r in res] == ["ok"] * n
    arrivals = arrival_offsets(n, rate)
    done, expected = 0.0, []
    for a in arrivals:  # one server slot, FIFO: when each request can finish at the earliest
        done = max(a, done) + service_s
        expected.append(done - a)
    for r, a, e in zip(res, arrivals, expected):
        assert r.scheduled_s == pytest.approx(a, abs=0.02)
        assert r.latency_s >= e - 0.03, (r.idx, r.latency_s, e)
    assert max(r.latency_s for r in res) > 3 * service_s
    assert max(r.sent_s - r.scheduled_s for r in res) > service_s  # they waited for the one slot
    m = summarize(res, cfg.slo)
    assert m["serving/latency_s_p95"] > 3 * service_s and m["serving/queue_s_p95"] > service_s


def test_timed_out_requests_count_at_their_timeout(throttled):
    """A server slower than the request timeout: every request fails, and the percentiles hold them at the timeout."""
    server = throttled(1.0)
    cfg = _bench(concurrency=1, requests=3, request_timeout_s=0.25)
    res = asyncio.run(run_load(server.spec, ["a", "b", "c"], cfg))
    assert [r.status for r in res] == ["failed"] * 3 and all(r.timed_out for r in res)
    assert all("request_timeout_s" in r.error for r in res)
    m = summarize(res, cfg.slo)
    assert m["serving/failure_rate"] == 1.0 and m["serving/requests_timed_out"] == 3
    assert m["serving/latency_s_p95"] == pytest.approx(0.25, abs=0.01) and m["serving/ttft_s_p95"] == pytest.approx(
        0.25, abs=0.01
    )
    assert cap.misses(m, OmegaConf.create({"ttft_s": None, "tpot_s": None, "latency_s": 1.0}), 0.0) == [
        "100.0 % failed > 0.0 %"
    ]


def test_prompts_are_distinct_windows_or_refused():
    starts = window_starts(1024, 32, 100)
    assert len(set(starts)) == 100 and starts[:32] == list(range(0, 1024, 32)) and starts[32] == 16  # then half-shifted
    assert len(set(window_starts(1024, 32, 993))) == 993  # every start position
    with pytest.raises(
        UserError, match=r"^benchmark.requests: 994 distinct prompts .* -- fix: raise eval.n_tokens to at least 1025"
    ):
        window_starts(1024, 32, 994)


@pytest.mark.parametrize("held_back", [3, 8])
def test_tokens_without_text_still_count(throttled, held_back):
    """vLLM streams a token whose bytes end inside a UTF-8 character as a chunk with token ids and no text.
    Such a chunk is a token made at that time: TTFT runs to it, and a response made only of them is not
    'no tokens'. 8 tokens over 0.8 s: the first arrives after ~0.1 s, the first text after (held_back+1) x 0.1 s."""
    server = throttled(0.8, held_back=held_back)
    cfg = _bench(concurrency=1, requests=2, gen_tokens=8)
    res = asyncio.run(run_load(server.spec, ["p0", "p1"], cfg))
    assert [(r.status, r.output_tokens, r.error) for r in res] == [("ok", 8, "")] * 2
    assert max(r.ttft_s for r in res) < 0.1 + held_back * 0.1 - 0.05, [r.ttft_s for r in res]


def test_poisson_scenario_search_starts_with_a_closed_loop_probe(throttled):
    """A Poisson load is not a closed-loop probe: the search runs its own at the scenario's users first, and the
    Poisson load's numbers (here: far outside the SLO) decide nothing."""
    server = throttled(0.05)
    cfg = _bench(
        arrival="poisson",
        rate=50.0,
        concurrency=2,
        requests=3,
        slo={"latency_s": 5.0},
        capacity={"enabled": True, "max_users": 2, "requests_per_user": 2, "min_requests": 5},
    )
    stream = type("Stream", (), {"ids": np.arange(4000)})()
    poisson_load = {"serving/latency_s_p95": 100.0, "serving/failure_rate": 0.0}
    found = capacity_search(server, stream, _Tokenizer(), cfg, poisson_load, used=3)
    first = found.probes[0]
    assert (first.users, first.requests, first.meets) == (2, 5, True), [(p.users, p.requests) for p in found.probes]
    assert found.max_users == 2 and found.stopped_by == "max_users"


def test_probe_cut_short_by_the_time_budget_is_not_measured(throttled, tmp_path):
    """0.5 s per request, one at a time, 1.5 s of search budget: the 2-user probe (8 requests, ~4 s) is cut short.
    That says nothing about the SLO: the search stops with a lower bound, not with "2 users miss it"."""
    server = throttled(0.5)
    cfg = _bench(
        concurrency=1,
        requests=2,
        slo={"latency_s": 10.0},
        capacity={"enabled": True, "max_users": 8, "requests_per_user": 4, "min_requests": 8, "max_total_s": 1.5},
    )
    stream = type("Stream", (), {"ids": np.arange(4000)})()
    first = summarize(asyncio.run(run_load(server.spec, ["p0", "p1"], cfg)), cfg.slo)
    found = capacity_search(server, stream, _Tokenizer(), cfg, first, used=2)
    assert [p.users for p in found.probes] == [1, 2]
    assert (found.max_users, found.bracketed, found.stopped_by) == (1, False, "max_total_s")
    cap.write_csv(found, tmp_path / "capacity.csv")
    row = (tmp_path / "capacity.csv").read_text().splitlines()[-1]
    assert "not measured" in row, row
