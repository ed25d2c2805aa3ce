"""The runner's serving speed vs what llama.cpp's `llama-server` itself reports for the same requests.

One runner-started server per side (runner/benchmark/servers/llama_server.py, and llama-cpp-python's
`llama_cpp.server` for the same rows), the runner's own load generator (runner/benchmark/loadgen.py), closed loop,
at 1 and 4 users, distinct eval-stream prompts. Per request:
  runner  = output tokens / latency the client measured (request sent -> last chunk), and decode = (tokens - 1) /
            (latency - TTFT);
  server  = llama-server's own `timings` of that request (on its stream's last chunk): predicted_n / (prompt_ms +
            predicted_ms), and decode = its predicted_per_second.
ratio = runner / server per request (goal >= 0.95: the runner's HTTP, streaming and parsing cost at most 5 %);
medians over the requests of --rounds rounds, [min-max] spreads. Total tok/s = the runner's serving/throughput_tok_s.
llama-cpp-python's server reports no per-request timings: its rows carry the runner's numbers only.

    python timings/llama_server_ratio.py                    # SmolLM2 Q4_K_M from the qrun cache (QRUN_CACHE_DIR)
    python timings/llama_server_ratio.py --threads 2 --rounds 3 model=hf model.id=/my/model
"""

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "timings"))

from serving_setup import arguments, served  # noqa: E402

from runner.benchmark.loadgen import run_load, summarize  # noqa: E402
from runner.benchmark.servers import (  # noqa: E402
    ServerProcess,
    llama_cpp_server,
    llama_server,
    pick_port,
)

SERVERS = {"llama-server": llama_server, "llama-cpp-python": llama_cpp_server}


def span(xs) -> str:
    return f"{statistics.median(xs):7.2f} [{min(xs):.2f}-{max(xs):.2f}]" if xs else "    n/a"


def per_request(results) -> dict:
    rows: dict = {k: [] for k in ("runner", "server", "ratio", "runner_decode", "server_decode", "decode_ratio")}
    for r in results:
        n = r.output_tokens
        runner, runner_decode = n / r.latency_s, (n - 1) / (r.latency_s - r.ttft_s)
        rows["runner"].append(runner)
        rows["runner_decode"].append(runner_decode)
        if r.server_timings:
            t = json.loads(r.server_timings)
            server = t["predicted_n"] / ((t["prompt_ms"] + t["predicted_ms"]) / 1e3)
            rows["server"].append(server)
            rows["ratio"].append(runner / server)
            rows["server_decode"].append(t["predicted_per_second"])
            rows["decode_ratio"].append(runner_decode / t["predicted_per_second"])
    return rows


def main() -> None:
    ap = arguments(__doc__, "gguf_q4_k_m")
    ap.add_argument("--servers", default=",".join(SERVERS))
    args = ap.parse_args()
    users = [int(u) for u in args.users.split(",")]
    cfg, model, artifact, texts, lengths = served(args, users, (1 + args.rounds * len(users)) * args.requests)
    print(
        f"{artifact.manifest['format']} {artifact.path}, {args.threads} threads, prompt {args.prompt} tokens, "
        f"gen {args.gen}, {args.requests} requests x {args.rounds} rounds per row; load before: {os.getloadavg()}"
    )
    table = []
    for name in args.servers.split(","):
        module = SERVERS[name]
        spec = module.spec(artifact, model, cfg.benchmark, cfg.hardware, "127.0.0.1", pick_port("127.0.0.1", 0))
        print(f"\n{name}: {spec.version or '(no version)'} {spec.settings or ''}", flush=True)
        log = ROOT / "timings" / "out" / "llama_server_ratio" / f"{name}-{time.strftime('%H%M%S')}.log"
        rows: dict = {u: {} for u in users}
        with ServerProcess(spec, log) as server:
            server.wait_healthy(300)
            k = args.requests
            asyncio.run(run_load(spec, texts[:k], cfg.benchmark, lengths[:k], sequential=True))  # warm-up
            for _ in range(args.rounds):
                for u in users:  # the user counts alternate round by round
                    part = slice(k, k + args.requests)
                    k += args.requests
                    load = cfg.benchmark.copy()
                    load.concurrency = u
                    res = asyncio.run(run_load(spec, texts[part], load, lengths[part]))
                    bad = [r.error for r in res if r.status != "ok" or r.output_tokens != args.gen]
                    if bad:
                        sys.exit(f"{name} at {u} users: {bad[:3]}")
                    for key, xs in per_request(res).items():
                        rows[u].setdefault(key, []).extend(xs)
                    total = summarize(res, cfg.benchmark.slo)["serving/throughput_tok_s"]
                    rows[u].setdefault("total", []).append(total)
        for u in users:
            table.append((name, u, rows[u]))
    print(f"\nload after: {os.getloadavg()}")
    print("\nper request tok/s (tokens / latency) and decode tok/s; total = runner's serving/throughput_tok_s")
    head = f"{'server':<17}{'users':>5}  {'runner req':>22}  {'server req':>22}  {'ratio':>22}"
    print(head + f"  {'runner decode':>22}  {'server decode':>22}  {'decode ratio':>22}  {'total':>22}")
    for name, u, r in table:
        cells = [span(r.get(k, [])) for k in ("runner", "server", "ratio", "runner_decode", "server_decode")]
        cells += [span(r.get("decode_ratio", [])), span(r["total"])]
        print(f"{name:<17}{u:>5}  " + "  ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
