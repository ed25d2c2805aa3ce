"""benchmark=serving: start a real OpenAI-compatible server for the artifact, load it, stop it.

Prompts: every request of a run gets its own prompt_tokens-id window of the eval stream, decoded to
text by the base model's tokenizer. Distinct prompts, so no server can answer from a prefix cache (the
servers also run with prefix caching off): first the disjoint windows, then windows shifted by half,
a quarter, ... of a window (each starts at its own token); more requests than distinct start
positions are refused (benchmark.requests). Every request streams exactly gen_tokens greedy tokens
(EOS suppressed). With benchmark.capacity.enabled, the capacity search (runner/benchmark/capacity.py)
loads the same server at other concurrencies after the measured load. Files for the run
(requests.csv, latency_cdf.png, server.log, server.json, capacity.csv) go to
<hydra run dir>/artifacts/serving/, which the job logs to MLflow.
"""

import asyncio
import json
import logging
import shlex
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import OmegaConf

from runner.benchmark import capacity as cap
from runner.benchmark.loadgen import RequestResult, run_load, summarize, write_csv
from runner.benchmark.memory_need import engine_reported_kv
from runner.benchmark.probes import PeakMemory, write_gpu_memory
from runner.benchmark.servers import ServerProcess, pick_port, server_spec
from runner.config.checks import check_load_config
from runner.errors import UserError
from runner.metrics import (
    SERVING_REQUESTS_FAILED,
    SERVING_REQUESTS_NOT_SENT,
    SERVING_SERVER_START_S,
)
from runner.tracking import MAX_TAG_CHARS, SERVER_COMMAND_TAG, SERVER_SETTING_TAG, SERVER_TAG, SERVER_VERSION_TAG

log = logging.getLogger(__name__)


def artifacts_dir() -> Path:
    """<hydra run dir>/artifacts/serving when running under qrun, else a fresh temp folder."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir) / "artifacts" / "serving"
    except (ImportError, ValueError):
        return Path(tempfile.mkdtemp(prefix="qrun_serving_"))


def window_starts(n_ids: int, prompt_tokens: int, n: int, what: str = "warmup + requests"):
    """n distinct start positions of prompt_tokens-long windows: the disjoint ones first, then each shifted by
    half a window, then by the quarters, ... (every start distinct); UserError when the stream has fewer than n."""
    last = n_ids - prompt_tokens  # the last possible start
    if last < 0:
        raise UserError(
            "benchmark.prompt_tokens",
            f"longer than the eval stream ({n_ids} tokens)",
            "lower benchmark.prompt_tokens or raise eval.n_tokens",
        )
    if n > last + 1:
        raise UserError(
            "benchmark.requests",
            f"{n} distinct prompts of {prompt_tokens} tokens ({what}) need more start positions than the "
            f"{n_ids}-token eval "
            f"stream has ({last + 1})",
            f"raise eval.n_tokens to at least {n + prompt_tokens - 1}, or lower "
            "benchmark.requests or benchmark.prompt_tokens",
        )
    starts, seen, step = [], set(), prompt_tokens
    while len(starts) < n:
        offsets = [0] if step == prompt_tokens else range(step, prompt_tokens, 2 * step)
        for off in offsets:
            for s0 in range(off, last + 1, prompt_tokens):
                if s0 not in seen:
                    seen.add(s0)
                    starts.append(s0)
        if step == 1:
            break
        step = max(step // 2, 1)
    return starts[:n]


def make_prompts(stream, tokenizer, n: int, prompt_tokens: int, first: int = 0):
    """Prompts first .. first+n-1 of the run's distinct windows of the eval stream, and their lengths in tokens."""
    starts = window_starts(len(stream.ids), prompt_tokens, first + n)[first:]
    texts = [tokenizer.decode(stream.ids[s0 : s0 + prompt_tokens].tolist()) for s0 in starts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return texts, lengths


def as_sent(spec, texts: List[str], tokenizer) -> list:
    """The prompts as the server gets them: the texts, or their token ids by the base model's tokenizer (the same
    ids make_prompts counted) where the server takes ids (ServerSpec.prompt_ids)."""
    if not spec.prompt_ids:
        return texts
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def serving_benchmark(
    artifact, model, bench_cfg, stream, hardware, server_name: str, out_dir: Optional[Path] = None
) -> Dict[str, float]:
    """Server `server_name` (runner.benchmark.servers.SERVERS) under the load; server.json and server_command.sh in
    out_dir say what ran (server_tags reads them back for the run's tags)."""
    check_load_config(bench_cfg)
    out = Path(out_dir) if out_dir else artifacts_dir()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = model.load_tokenizer()
    n_load = bench_cfg.warmup + bench_cfg.requests
    texts, lengths = make_prompts(stream, tokenizer, n_load, bench_cfg.prompt_tokens)
    search = bench_cfg.get("capacity") is not None and bench_cfg.capacity.enabled
    if search:  # refuse before the server starts when the stream cannot give one probe distinct prompts
        window_starts(
            len(stream.ids),
            bench_cfg.prompt_tokens,
            cap.requests_for(bench_cfg.capacity.max_users, bench_cfg.capacity),
            "one capacity probe at benchmark.capacity.max_users",
        )
    port = pick_port(bench_cfg.host, bench_cfg.port)
    spec = server_spec(artifact, server_name, model, bench_cfg, hardware, port)
    texts = as_sent(spec, texts, tokenizer)
    server = ServerProcess(spec, out / "server.log")
    (out / "server_command.sh").write_text(ready_to_run(spec))
    try:
        server.start()
        # from the launch on: a server's peak while it loads the model counts, not only the load's
        with PeakMemory(server.pid, tree=True, gpu=str(hardware.device).startswith("cuda"), interval_s=0.1) as mem:
            (out / "server.json").write_text(
                json.dumps(
                    {
                        "server": server_name,
                        "name": spec.name,
                        "version": spec.version,
                        "settings": spec.settings,
                        "pid": server.pid,
                        "url": spec.url,
                        "cmd": spec.cmd,
                    },
                    indent=2,
                )
            )
            start_s = server.wait_healthy(bench_cfg.startup_timeout_s)
            log.info(
                "%s server healthy after %.1f s; %d warmup + %d requests, %s arrivals, concurrency %d",
                spec.name,
                start_s,
                bench_cfg.warmup,
                bench_cfg.requests,
                bench_cfg.arrival,
                bench_cfg.concurrency,
            )
            results = _load(server, texts, lengths, bench_cfg)
        write_csv(results, out / "requests.csv")
        metrics = summarize(results, bench_cfg.slo)
        if search:
            _raise_if_server_died(server, results)
            found = capacity_search(server, stream, tokenizer, bench_cfg, metrics, n_load)
            cap.write_csv(found, out / "capacity.csv")
            metrics.update(cap.metrics_of(found))
    finally:
        server.stop()
    metrics.update({SERVING_SERVER_START_S: start_s, **mem.metrics()})  # PSS of the tree; NVML's GPU memory
    write_gpu_memory(mem.peak_vram_by_gpu, out, mem.vram_method)
    metrics.update(engine_reported_kv(out / "server.log"))
    plot_cdf(
        results,
        out / "latency_cdf.png",
        f"{artifact.manifest['format']} on {spec.name}, {bench_cfg.arrival} "
        f"arrivals, concurrency {bench_cfg.concurrency}",
    )
    _raise_if_server_died(server, results)
    if metrics[SERVING_REQUESTS_FAILED] or metrics[SERVING_REQUESTS_NOT_SENT]:
        first = next(r.error for r in results if r.status != "ok")
        log.warning(
            "%d failed, %d not sent of %d requests (first error: %s); see %s",
            metrics[SERVING_REQUESTS_FAILED],
            metrics[SERVING_REQUESTS_NOT_SENT],
            len(results),
            first,
            out / "requests.csv",
        )
    return metrics


def ready_to_run(spec) -> str:
    """The command the benchmark measured, as a shell line: its environment and argv, without the runner's
    parent-death launcher (runner/benchmark/servers/_launch.py)."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in spec.env.items())
    return f"{env} {shlex.join(spec.cmd)}\n" if env else shlex.join(spec.cmd) + "\n"


def server_tags(out_dir: Path) -> Dict[str, str]:
    """The run's tags for the server that ran (from out_dir/server.json): its name, version and deciding flags."""
    info = json.loads((Path(out_dir) / "server.json").read_text())
    tags = {SERVER_TAG: info["server"], SERVER_VERSION_TAG: info.get("version") or "unknown"}
    tags.update({SERVER_SETTING_TAG.format(k): str(v) for k, v in (info.get("settings") or {}).items()})
    if info["server"] == "vllm" and (Path(out_dir) / "server.log").is_file():  # what vLLM's log says it chose
        from runner.engines.vllm import reported

        text = (Path(out_dir) / "server.log").read_text(errors="replace")
        tags.update({SERVER_SETTING_TAG.format(k): v for k, v in reported(text).choices().items()})
    command = (Path(out_dir) / "server_command.sh").read_text().strip()
    if len(command) <= MAX_TAG_CHARS:  # else only the artifact holds it
        tags[SERVER_COMMAND_TAG] = command
    return tags


def capacity_search(
    server: ServerProcess, stream, tokenizer, cfg, load_metrics: Dict[str, float], used: int
) -> cap.Capacity:
    """The largest concurrency on this running server within cfg.slo (runner/benchmark/capacity.py). A closed-loop
    load at cfg.concurrency is the first probe (a Poisson load is not one: the search then starts with a closed-loop
    probe at cfg.concurrency). Each probe's prompts are distinct windows of the stream."""
    c = cfg.capacity
    first = None
    if cfg.arrival == "closed":
        first = cap.Probe(
            cfg.concurrency, cfg.requests, load_metrics, cap.misses(load_metrics, cfg.slo, c.max_failure_rate)
        )
    t_end = time.perf_counter() + c.max_total_s
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # a scenario's ${deployment.*} resolve here

    def probe(users: int) -> cap.Probe:
        nonlocal used
        n = cap.requests_for(users, c)
        n_windows = _n_starts(len(stream.ids), cfg.prompt_tokens)
        first_prompt = (
            used if used + n <= n_windows else 0
        )  # past the stream's windows: start again (each probe's own are distinct)
        texts, lengths = make_prompts(stream, tokenizer, n, cfg.prompt_tokens, first=first_prompt)
        texts = as_sent(server.spec, texts, tokenizer)
        used = first_prompt + n
        budget_s = t_end - time.perf_counter()
        load = OmegaConf.merge(
            resolved,
            {
                "concurrency": users,
                "requests": n,
                "arrival": "closed",
                "max_duration_s": max(min(cfg.max_duration_s, budget_s), 1.0),
            },
        )
        t0 = time.perf_counter()
        results = asyncio.run(run_load(server.spec, texts, load, lengths))
        _raise_if_server_died(server, results)
        m = summarize(results, cfg.slo)
        cut = budget_s < cfg.max_duration_s and any(cap.stopped_by_duration(r.status, r.error) for r in results)
        p = cap.Probe(
            users, n, m, cap.misses(m, cfg.slo, c.max_failure_rate), time.perf_counter() - t0, measured=not cut
        )
        log.info("capacity probe: %d users, %d requests: %s", users, n, p.verdict)
        return p

    found = cap.search(probe, c, first=first, start_users=cfg.concurrency)
    log.info(
        "capacity: %d users within the SLO (%s)",
        found.max_users,
        "bracketed" if found.bracketed else f"a lower bound: stopped by capacity.{found.stopped_by}",
    )
    return found


def _n_starts(n_ids: int, prompt_tokens: int) -> int:
    return max(n_ids - prompt_tokens + 1, 0)


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
        raise RuntimeError(
            f"the {server.spec.name} server (pid {server.pid}) exited with code {code} during the load: "
            f"{ok} ok, {len(results) - ok} failed or not sent of {len(results)} requests "
            f"(requests.csv and server.log in {server.log_path.parent}):\n{server.log_tail()}"
        )


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
