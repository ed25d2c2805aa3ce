"""GGUF f16 vs Q8_0 vs Q4_K_M behind llama.cpp's server at 1, 4 and 16 concurrent users (benchmark=serving).

Runs one qrun sweep (format x benchmark.concurrency, closed loop, the same requests per job) on the
embedded SmolLM2-135M, then prints TTFT p95, end-to-end p95 and output tok/s per job from MLflow.

    python timings/serving_concurrency.py                  # ~10-20 min on a shared 2-core box
    python timings/serving_concurrency.py --requests 16 --users 1,4 --formats gguf_q8_0
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default="gguf_f16,gguf_q8_0,gguf_q4_k_m")
    ap.add_argument("--users", default="1,4,16", help="benchmark.concurrency values")
    ap.add_argument("--requests", type=int, default=32, help="measured requests per job (same for every job)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument(
        "--threads", type=int, default=1, help="server threads (hardware.threads); 1 is steadier on a shared box"
    )
    ap.add_argument("--out", default=str(ROOT / "timings" / "out" / "serving_concurrency"))
    ap.add_argument("extra", nargs="*", help="more qrun overrides, e.g. model=hf model.id=/my/model")
    args = ap.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    db = out / f"mlflow-{time.strftime('%Y%m%d-%H%M%S')}.db"  # a fresh store: every job runs, none is reused
    env = dict(
        os.environ, QRUN_CACHE_DIR=os.environ.get("QRUN_CACHE_DIR", str(ROOT / ".qrun_cache")), PYTHONPATH=str(ROOT)
    )
    cmd = [
        sys.executable,
        "-m",
        "runner",
        "-m",
        f"format={args.formats}",
        "benchmark=serving",
        f"benchmark.concurrency={args.users}",
        f"benchmark.requests={args.requests}",
        f"benchmark.prompt_tokens={args.prompt_tokens}",
        f"benchmark.gen_tokens={args.gen_tokens}",
        f"hardware.threads={args.threads}",
        "stages=[quantize,benchmark]",
        "eval=quick",
        f"tracking.uri=sqlite:///{db}",
        *args.extra,
    ]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out, env=env)
    print(f"sweep: exit {proc.returncode}, {time.perf_counter() - start:.0f} s\n")
    print(table(db, args))
    sys.exit(proc.returncode)


def table(db: Path, args) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("quant-runner")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000) if "format.name" in r.data.params]
    order = {f: i for i, f in enumerate(args.formats.split(","))}
    runs.sort(key=lambda r: (order.get(r.data.params["format.name"], 99), int(r.data.params["benchmark.concurrency"])))
    lines = [
        f"prompt {args.prompt_tokens} tokens, {args.gen_tokens} new tokens, {args.requests} requests per job, "
        f"closed loop, llama.cpp server with {args.threads} thread(s)",
        "",
        "| format | users | TTFT p95 s | e2e p95 s | TPOT p50 s | output tok/s | req/s | ok / failed | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        m, p = r.data.metrics, r.data.params
        get = lambda k, f="{:.2f}": f.format(m[k]) if k in m else "-"  # noqa: E731
        lines.append(
            f"| {p['format.name']} | {p['benchmark.concurrency']} | {get('serving/ttft_s_p95')} | "
            f"{get('serving/latency_s_p95')} | {get('serving/tpot_s_p50', '{:.3f}')} | "
            f"{get('serving/throughput_tok_s', '{:.1f}')} | "
            f"{get('serving/requests_per_s')} | {get('serving/requests_ok', '{:.0f}')} / "
            f"{get('serving/requests_failed', '{:.0f}')} | "
            f"{r.info.status} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
