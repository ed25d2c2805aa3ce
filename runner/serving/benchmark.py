"""benchmark=serving: start a real OpenAI-compatible server for the artifact, load it, stop it.

Prompts: request i gets its own window of prompt_tokens ids from the eval stream (windows cycle
when there are more requests than windows), decoded to text by the base model's tokenizer; distinct
prompts, so no server can answer from a prefix cache. Every request streams exactly gen_tokens
greedy tokens (EOS suppressed). Files for the run (requests.csv, latency_cdf.png, server.log,
server.json) go to <hydra run dir>/artifacts/serving/, which the job logs to MLflow.
"""
import asyncio
import json
import logging
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from runner.errors import UserError
from runner.serving.loadgen import RequestResult, check_load_config, run_load, summarize, write_csv
from runner.probes import PeakMemory
from runner.serving.servers import ServerProcess, pick_port, server_spec

log = logging.getLogger(__name__)


def artifacts_dir() -> Path:
    """<hydra run dir>/artifacts/serving when running under qrun, else a fresh temp folder."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir) / "artifacts" / "serving"
    except (ImportError, ValueError):
        return Path(tempfile.mkdtemp(prefix="qrun_serving_"))


def make_prompts(stream, tokenizer, n: int, prompt_tokens: int):
    """n prompt texts (distinct windows of the eval stream) and their lengths in the tokenizer's tokens."""
    windows = len(stream.ids) // prompt_tokens
    if windows < 1:
        raise UserError("benchmark.prompt_tokens", f"longer than the eval stream ({len(stream.ids)} tokens)",
                        "lower benchmark.prompt_tokens or raise eval.n_tokens")
    texts = [tokenizer.decode(stream.ids[(i % windows) * prompt_tokens:][:prompt_tokens].tolist()) for i in range(n)]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return texts, lengths


def serving_benchmark(artifact, model, bench_cfg, stream, hardware, engine_name: str,
                      out_dir: Optional[Path] = None) -> Dict[str, float]:
    check_load_config(bench_cfg)
    out = Path(out_dir) if out_dir else artifacts_dir()
    out.mkdir(parents=True, exist_ok=True)
    texts, lengths = make_prompts(stream, model.load_tokenizer(), bench_cfg.warmup + bench_cfg.requests,
                                  bench_cfg.prompt_tokens)
    port = pick_port(bench_cfg.host, bench_cfg.port)
    spec = server_spec(artifact, engine_name, model, bench_cfg, hardware, port)
    server = ServerProcess(spec, out / "server.log")
    try:
        server.start()
        (out / "server.json").write_text(json.dumps({"server": spec.name, "pid": server.pid, "url": spec.url,
                                                     "cmd": spec.cmd}, indent=2))
        start_s = server.wait_healthy(bench_cfg.startup_timeout_s)
        log.info("%s server healthy after %.1f s; %d warmup + %d requests, %s arrivals, concurrency %d", spec.name, start_s,
                 bench_cfg.warmup, bench_cfg.requests, bench_cfg.arrival, bench_cfg.concurrency)
        with PeakMemory(server.pid, tree=True, gpu=str(hardware.device).startswith("cuda"), interval_s=0.1) as mem:
            results = _load(server, texts, lengths, bench_cfg)
    finally:
        server.stop()
    write_csv(results, out / "requests.csv")
    metrics = summarize(results, bench_cfg.slo)
    metrics.update({"serving/server_start_s": start_s, "perf/peak_rss_bytes": float(mem.peak_rss)})
    if mem.peak_vram is not None:  # NVML's per-process GPU memory of the server tree, where it can see it
        metrics["perf/peak_vram_bytes"] = float(mem.peak_vram)
    plot_cdf(results, out / "latency_cdf.png", f"{artifact.manifest['format']} on {spec.name}, {bench_cfg.arrival} "
             f"arrivals, concurrency {bench_cfg.concurrency}")
    _raise_if_server_died(server, results)
    if metrics["serving/requests_failed"] or metrics["serving/requests_not_sent"]:
        first = next(r.error for r in results if r.status != "ok")
        log.warning("%d failed, %d not sent of %d requests (first error: %s); see %s", metrics["serving/requests_failed"],
                    metrics["serving/requests_not_sent"], len(results), first, out / "requests.csv")
    return metrics


def _load(server: ServerProcess, texts: List[str], lengths: List[int], cfg) -> List[RequestResult]:
    n_warm = cfg.warmup
    for text in texts[:n_warm]:  # one at a time, unmeasured: first-request costs stay out of the numbers
        warm = asyncio.run(run_load(server.spec, [text], cfg, sequential=True))[0]
        if warm.status != "ok":
            _raise_if_server_died(server, [warm])
            raise RuntimeError(f"the warmup request to the {server.spec.name} server failed: {warm.error}")
    return asyncio.run(run_load(server.spec, texts[n_warm:], cfg, lengths[n_warm:]))


def _raise_if_server_died(server: ServerProcess, results: List[RequestResult]) -> None:
    code = server.proc.poll() if server.proc else None
    if code is not None and not server.stopped_by_us:
        ok = sum(r.status == "ok" for r in results)
        raise RuntimeError(f"the {server.spec.name} server (pid {server.pid}) exited with code {code} during the load: "
                           f"{ok} ok, {len(results) - ok} failed or not sent of {len(results)} requests "
                           f"(requests.csv and server.log in {server.log_path.parent}):\n{server.log_tail()}")


def plot_cdf(results: List[RequestResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in results if r.status == "ok"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in (("TTFT", [r.ttft_s for r in ok]), ("end-to-end latency", [r.latency_s for r in ok])):
        x = np.sort(values)
        ax.step(x, np.arange(1, len(x) + 1) / max(len(x), 1), where="post", label=label)
    ax.set(xlabel="seconds", ylabel="share of requests", title=title, ylim=(0, 1.02))
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
