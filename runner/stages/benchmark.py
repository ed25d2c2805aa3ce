"""benchmark(artifact) -> speed and memory metrics through the job's engine; the stage picks the kind.

benchmark.kind=offline (here): one request = a fixed prompt (the first prompt_tokens ids of the eval
stream) + greedy decoding of gen_tokens new tokens. Medians over `repeats` after `warmup` unmeasured
requests. It runs in a fresh process (runner/benchmark/worker.py) that imports only the
engine: its peak RSS is what deploying that engine needs, not this job process with torch,
transformers and whatever the earlier stages left behind.
benchmark.kind=serving: a real server under concurrent load (runner/benchmark/), the one the format deploys with
(runner.benchmark.servers.resolve_server); the run's tags name it, its version and its deciding flags, and
artifacts/serving/server_command.sh holds the command that was measured.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

import runner
from runner.benchmark import fit, memory_need
from runner.benchmark.probes import gpu_memory_params, memory_metrics, write_gpu_memory
from runner.engines import get_engine
from runner.errors import UserError
from runner.metrics import (
    MEMORY_ENGINE_KV_CACHE_TOKENS,
    PERF_DECODE_TOK_S,
    PERF_LATENCY_S_P50,
    PERF_LATENCY_S_P95,
    PERF_LOAD_S,
    PERF_PREFILL_TOK_S,
    PERF_RSS_INCREASE_BYTES,
    PERF_THROUGHPUT_TOK_S,
    PERF_TTFT_S_P50,
    TIME_BENCHMARK_S,
    ci_names,
    member,
)
from runner.quality.stream import stream_params
from runner.stages import StageContext, StageResult
from runner.stats.repeats import mean_interval, spread
from runner.system.library_logs import job_log_files

WORKER = "runner.benchmark.worker"
ENGINE_REPORT = "engine_report.json"  # what the engine's own log said it chose (vLLM), next to the other files


def run(ctx: StageContext) -> StageResult:
    cfg, stream = ctx.cfg, ctx.stream  # the stream before the clock: it is shared with the evaluate stage
    start = time.perf_counter()
    out_dir = ctx.run_dir / "artifacts" / cfg.benchmark.kind  # files for the run (the serving kind writes some)
    tags: Dict[str, str] = {}
    if getattr(cfg.benchmark, "kind", "offline") == "serving":
        from runner.benchmark.servers import resolve_server
        from runner.benchmark.serving import server_tags, serving_benchmark

        server = resolve_server(cfg)  # format.server, deployment.servers or the default rule
        perf = serving_benchmark(ctx.artifact, ctx.model, cfg.benchmark, stream, cfg.hardware, server, out_dir)
        tags = server_tags(out_dir)
    else:
        perf = benchmark(ctx.artifact, ctx.model, cfg.benchmark, stream, cfg.hardware, ctx.engine.NAME, out_dir)
    perf[TIME_BENCHMARK_S] = time.perf_counter() - start
    need, need_params = memory_need.need(ctx.artifact, ctx.model, ctx.engine.NAME, cfg.benchmark, cfg.hardware)
    perf.update(need)
    perf.update(fit.after_run(cfg, memory_need.base_config(ctx.model.path), perf))
    files: List[Tuple[Path, Optional[str]]] = [
        (f, str(f.parent.relative_to(ctx.run_dir))) for f in sorted(out_dir.rglob("*")) if f.is_file()
    ]
    return StageResult(
        metrics=perf,
        tags=tags,
        files=files,
        summary={"perf": perf},
        params={
            **stream_params(stream),
            "perf.memory_scope": memory_scope(ctx.engine.NAME, cfg.benchmark),
            **engine_params(out_dir),
            **gpu_memory_params(out_dir),
            **need_params,
        },
    )


def memory_scope(engine_name: str, bench_cfg) -> str:
    """What perf/peak_rss_bytes covers (logged as param perf.memory_scope)."""
    if getattr(bench_cfg, "kind", "offline") == "serving":
        return "server process tree"
    return f"fresh process: {engine_name} + python"


def benchmark(artifact, model, bench_cfg, stream, hardware, engine_name: str, out_dir=None) -> Dict[str, float]:
    """The offline benchmark (benchmark.kind=serving runs runner.benchmark.serving from run())."""
    kind = getattr(bench_cfg, "kind", "offline")
    if kind != "offline":
        raise UserError("benchmark.kind", f"unknown kind '{kind}'", "use offline or serving")
    if bench_cfg.prompt_tokens > len(stream.ids):
        raise UserError(
            "benchmark.prompt_tokens",
            f"longer than the eval stream ({len(stream.ids)} tokens)",
            "lower benchmark.prompt_tokens or raise eval.n_tokens",
        )
    if bench_cfg.gen_tokens < 2 or bench_cfg.repeats < 1:
        raise UserError("benchmark.gen_tokens", "need gen_tokens >= 2 and repeats >= 1", "raise them")
    if not getattr(bench_cfg, "noisy_cv", 0.1) >= 0:
        raise UserError("benchmark.noisy_cv", f"must be >= 0 (got {bench_cfg.noisy_cv})", "set it to e.g. 0.10 (10 %)")
    get_engine(engine_name).check_artifact(artifact)  # here: the worker must not import runner.formats
    request = worker_request(artifact, model, bench_cfg, stream, hardware, engine_name)
    out = run_worker(request)
    ttft, total = np.array(out["ttft_s"]), np.array(out["total_s"])
    decode = total - ttft
    n_new = bench_cfg.gen_tokens
    short = [n for n in out["new_tokens"] if n != n_new]
    if short:  # every speed below divides by n_new: a repeat that stopped early would make them up
        raise RuntimeError(
            f"format.engine={engine_name}: a benchmark repeat generated {short[0]} tokens where "
            f"benchmark.gen_tokens={n_new} were asked, so its speeds would be wrong"
        )
    peak = max(out["peak_rss"], out["hwm_rss"] or 0)  # the kernel's high-water mark catches what sampling missed
    if out_dir is not None:
        write_gpu_memory(out["peak_vram_by_gpu"], Path(out_dir), out["vram_method"])
    metrics = {
        PERF_LOAD_S: out["load_s"],
        PERF_PREFILL_TOK_S: len(request["prompt"]) / float(np.median(ttft)),
        PERF_DECODE_TOK_S: (n_new - 1) / float(np.median(decode)),
        PERF_TTFT_S_P50: float(np.median(ttft)),
        PERF_LATENCY_S_P50: float(np.median(total)),
        PERF_LATENCY_S_P95: float(np.percentile(total, 95)),
        PERF_THROUGHPUT_TOK_S: n_new / float(np.median(total)),  # one stream; see benchmark=serving for load
        PERF_RSS_INCREASE_BYTES: float(peak - out["start_rss"]),  # over the worker's python + engine imports
    }
    metrics.update(speed_spread(len(request["prompt"]) / ttft, (n_new - 1) / decode))
    metrics.update(
        speed_intervals(
            {
                PERF_PREFILL_TOK_S: len(request["prompt"]) / ttft,
                PERF_DECODE_TOK_S: (n_new - 1) / decode,
                PERF_THROUGHPUT_TOK_S: n_new / total,
                PERF_TTFT_S_P50: ttft,
                PERF_LATENCY_S_P50: total,
            }
        )
    )
    metrics.update(
        memory_metrics(peak, out["peak_pss"], out["pss_rss_standins"], out["peak_vram"], out["peak_vram_by_gpu"])
    )
    if out["kv_cache_tokens"] is not None:
        metrics[MEMORY_ENGINE_KV_CACHE_TOKENS] = float(out["kv_cache_tokens"])
    if out.get("engine_report"):  # what vLLM's log said: its sizes as metrics, its choices in engine_report.json
        from runner.engines.vllm import VllmReport

        report = VllmReport(**out["engine_report"])
        metrics.update(memory_need.reported_metrics(report))
        if out_dir is not None and report.choices():
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / ENGINE_REPORT).write_text(json.dumps(report.choices(), indent=2))
    return metrics


def engine_params(out_dir: Path) -> Dict[str, str]:
    """vllm.<name> params from the offline benchmark's engine_report.json (the attention backend and linear kernel
    vLLM chose, the context it reports); {} where the engine reported none."""
    path = Path(out_dir) / ENGINE_REPORT
    if not path.is_file():
        return {}
    return {f"vllm.{k}": str(v) for k, v in json.loads(path.read_text()).items()}


def speed_spread(prefill_tok_s: np.ndarray, decode_tok_s: np.ndarray) -> Dict[str, float]:
    """min, max and CV over the repeats of each speed (none for one repeat); the summary flags a CV above
    benchmark.noisy_cv as noisy."""
    out = {}
    for base, per_repeat in ((PERF_PREFILL_TOK_S, prefill_tok_s), (PERF_DECODE_TOK_S, decode_tok_s)):
        out.update({member(base, stat): v for stat, v in spread(per_repeat).items()})
    return out


def speed_intervals(per_repeat: Dict[str, np.ndarray]) -> Dict[str, float]:
    """`<name>_ci_low/_high`: the 95 % t interval of each speed's mean over the repeats (none for one repeat);
    runner/report/ties.py compares two runs' speeds by the interval of their difference."""
    out = {}
    for name, values in per_repeat.items():
        interval = mean_interval(values)
        if interval is not None:
            out[ci_names(name)[0]], out[ci_names(name)[1]] = interval
    return out


def worker_request(artifact, model, bench_cfg, stream, hardware, engine_name: str) -> dict:
    """Everything the worker needs, as plain picklable values (it must not import the classes that made them)."""
    return {
        "engine": engine_name,
        "artifact": {"path": Path(artifact.path), "manifest": artifact.manifest},
        "model": dict(vars(model)),
        "hardware": _plain(hardware),
        "prompt": [int(t) for t in stream.ids[: bench_cfg.prompt_tokens]],
        "gen_tokens": bench_cfg.gen_tokens,
        "warmup": bench_cfg.warmup,
        "repeats": bench_cfg.repeats,
        "label": f"benchmark ({artifact.manifest['format']})",
    }


def _plain(cfg) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        plain = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(plain, dict)
        return plain
    return dict(vars(cfg))


def run_worker(request: dict) -> dict:
    """Run the worker on `request`; its UserError comes back as the same UserError, a crash as a RuntimeError."""
    engine = request["engine"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(runner.__file__).parent.parent), env.get("PYTHONPATH")) if p
    )
    with tempfile.TemporaryDirectory(prefix="qrun-bench-") as tmp:
        req_file, res_file = Path(tmp) / "request.pkl", Path(tmp) / "result.pkl"
        logs = job_log_files()  # the worker's library chatter goes where the job's goes
        req_file.write_bytes(pickle.dumps({**request, "log_file": logs[0].baseFilename if logs else None}))
        proc = subprocess.Popen(
            [sys.executable, "-m", WORKER, str(req_file), str(res_file)],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            tail = _forward(proc.stderr)
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: the worker must not outlive the job
                proc.kill()
                proc.wait()
        out = pickle.loads(res_file.read_bytes()) if res_file.exists() else None
    if out is None:
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        raise RuntimeError(
            f"format.engine={engine}: the benchmark process {how} while running "
            f"{request['label']}; its last output:\n{tail}"
        )
    if "user_error" in out:
        raise UserError(*out["user_error"])
    if "error" in out:
        raise RuntimeError(f"format.engine={engine}: the benchmark process failed: {out['error']}\n{out['traceback']}")
    return out["ok"]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _forward(pipe, keep: int = 4000) -> str:
    """Copy the worker's stderr (progress bars, logs) to ours as it comes; return its last `keep` characters."""
    tail: deque = deque()
    size = 0
    while chunk := os.read(pipe.fileno(), 4096):
        text = chunk.decode(errors="replace")
        sys.stderr.write(text)
        sys.stderr.flush()
        tail.append(text)
        size += len(text)
        while size - len(tail[0]) > keep:
            size -= len(tail.popleft())
    pipe.close()
    return "".join(tail)[-keep:]
