"""The runner's llama.cpp speed vs llama.cpp's own `llama-bench`, on the same GGUF file and threads.

llama-bench is built from the llama.cpp sources vendored in the sdist of the installed
llama-cpp-python (the code the engine runs), with the venv's flags (GGML_NATIVE=ON), once, in the
build folder of llama.cpp's tools (runner/system/llama_cpp_tools.py, shared with `make llama-server`).
The runner side is the offline benchmark's own worker process (runner/benchmark/worker.py),
exactly what `qrun` times. Goal: runner / llama-bench >= 0.95 for prefill and decode. Both sides use
flash attention off (llama-cpp-python's default).

Rows: prefill = pp<P> (runner: prompt / TTFT); decode = tg<G> at depth P (runner: the G-1 tokens after
the first, which follow the prompt); tg<G> at depth 0 is llama-bench's default test, shown for reference.
Medians over --repeats x --rounds samples, [min-max] spreads; the sides alternate round by round.

    python timings/llama_bench_ratio.py                 # the gguf_q4_k_m artifact in the qrun cache
    python timings/llama_bench_ratio.py model.gguf --threads 2
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from runner.stages.benchmark import run_worker  # noqa: E402
from runner.system import llama_cpp_tools  # noqa: E402


def llama_bench_binary(jobs: int) -> Path:
    binary = llama_cpp_tools.binary("llama-bench")
    if binary is None:
        print(f"building llama-bench in {llama_cpp_tools.home()} (10-15 min on 2 cores, once)", file=sys.stderr)
        llama_cpp_tools.build(["llama-bench"], jobs)
        binary = llama_cpp_tools.binary("llama-bench")
    assert binary is not None
    return binary


def default_gguf() -> Path:
    cache = Path(os.environ.get("QRUN_CACHE_DIR", ROOT / ".qrun_cache"))
    for manifest in sorted(cache.glob("artifacts/*/manifest.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        m = json.loads(manifest.read_text())
        if m.get("format") == "gguf_q4_k_m":
            return manifest.parent / m["weight_files"][0]
    sys.exit(f"no gguf_q4_k_m artifact in {cache}: run `qrun format=gguf_q4_k_m stages=[quantize]` or pass a .gguf")


def llama_bench(binary: Path, gguf: Path, threads: int, repeats: int, prompt: int, gen: int, depth: int) -> list:
    cmd = [
        str(binary),
        "-m",
        str(gguf),
        "-t",
        str(threads),
        "-r",
        str(repeats),
        "-p",
        str(prompt),
        "-n",
        str(gen),
        "-d",
        str(depth),
        "-fa",
        "0",
        "-ngl",
        "0",
        "-o",
        "json",
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def runner_samples(gguf: Path, threads: int, repeats: int, prompt: int, gen: int) -> dict:
    rng = np.random.default_rng(0)  # random ids, as llama-bench uses: speed does not depend on the text
    request = {
        "engine": "llama_cpp",
        "artifact": {"path": gguf.parent, "manifest": {"weight_files": [gguf.name], "format": gguf.stem}},
        "model": {},
        "hardware": {"device": "cpu", "threads": threads, "n_gpu_layers": 0},
        "prompt": rng.integers(1, 1000, prompt).tolist(),
        "gen_tokens": gen,
        "warmup": 1,
        "repeats": repeats,
        "label": "runner",
    }
    out = run_worker(request)
    ttft, total = np.array(out["ttft_s"]), np.array(out["total_s"])
    return {
        "prefill": list(prompt / ttft),
        "decode": list((gen - 1) / (total - ttft)),
        "peak_rss_mb": max(out["peak_rss"], out["hwm_rss"] or 0) / 1e6,
    }


def summary(xs) -> str:
    return f"{statistics.median(xs):8.1f} [{min(xs):.1f}-{max(xs):.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", nargs="?", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2, help="parallel compile jobs for the one-time build")
    args = ap.parse_args()
    gguf = (args.gguf or default_gguf()).resolve()
    binary = llama_bench_binary(args.jobs)
    ours = {"prefill": [], "decode": []}
    theirs = {"prefill": [], "decode": [], "decode_d0": []}
    for _ in range(args.rounds):
        for t in llama_bench(binary, gguf, args.threads, args.repeats, args.prompt, args.gen, 0):
            theirs["prefill" if t["n_prompt"] else "decode_d0"] += t["samples_ts"]
        for t in llama_bench(binary, gguf, args.threads, args.repeats, 0, args.gen, args.prompt):
            theirs["decode"] += t["samples_ts"]
        r = runner_samples(gguf, args.threads, args.repeats, args.prompt, args.gen)
        ours["prefill"] += r["prefill"]
        ours["decode"] += r["decode"]
    print(f"{gguf.name}, {args.threads} threads, {args.rounds} rounds x {args.repeats} repeats; tok/s median [min-max]")
    print(f"{'':30} {'runner':>24} {'llama-bench':>24} {'ratio':>6}")
    rows = [
        (f"prefill pp{args.prompt}", ours["prefill"], theirs["prefill"]),
        (f"decode tg{args.gen} @ depth {args.prompt}", ours["decode"], theirs["decode"]),
        (f"(decode tg{args.gen} @ depth 0)", ours["decode"], theirs["decode_d0"]),
    ]
    for name, a, b in rows:
        print(f"{name:30} {summary(a):>24} {summary(b):>24} {statistics.median(a) / statistics.median(b):6.3f}")
    print(f"runner worker peak RSS: {r['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
