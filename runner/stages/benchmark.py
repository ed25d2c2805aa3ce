"""benchmark(artifact) -> speed and memory metrics through the artifact's engine.

One request = a fixed prompt (the first prompt_tokens ids of the eval stream) + greedy decoding of
gen_tokens new tokens. Medians over `repeats` after `warmup` unmeasured requests.
"""
import gc
import threading
import time
from typing import Dict

import numpy as np
import psutil
from tqdm import tqdm

from runner.engines import get_engine
from runner.errors import UserError


class PeakRss:
    """Samples this process's RSS in a thread; peak over the `with` block."""

    def __init__(self, interval_s: float = 0.01):
        self.interval_s, self.peak, self.start_rss = interval_s, 0, 0
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self):
        self.start_rss = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def benchmark(artifact, model, bench_cfg, stream, hardware) -> Dict[str, float]:
    kind = getattr(bench_cfg, "kind", "offline")
    if kind == "serving":  # a real server under concurrent load: runner/stages/serving.py
        from runner.stages.serving import serving_benchmark

        return serving_benchmark(artifact, model, bench_cfg, stream, hardware)
    if kind != "offline":
        raise UserError("benchmark.kind", f"unknown kind '{kind}'", "use offline or serving")
    if bench_cfg.prompt_tokens > len(stream.ids):
        raise UserError("benchmark.prompt_tokens", f"longer than the eval stream ({len(stream.ids)} tokens)",
                        "lower benchmark.prompt_tokens or raise eval.n_tokens")
    if bench_cfg.gen_tokens < 2 or bench_cfg.repeats < 1:
        raise UserError("benchmark.gen_tokens", "need gen_tokens >= 2 and repeats >= 1", "raise them")
    prompt = stream.ids[: bench_cfg.prompt_tokens].tolist()
    engine = get_engine(artifact.engine)
    gc.collect()
    with PeakRss() as rss:
        start = time.perf_counter()
        loaded = engine.load(artifact, model, hardware)
        load_s = time.perf_counter() - start
        try:
            for _ in range(bench_cfg.warmup):
                loaded.generate(prompt, bench_cfg.gen_tokens)
            runs = [loaded.generate(prompt, bench_cfg.gen_tokens)
                    for _ in tqdm(range(bench_cfg.repeats), desc=f"benchmark ({artifact.manifest['format']})", unit="req")]
        finally:
            loaded.close()
    ttft = np.array([r.ttft_s for r in runs])
    total = np.array([r.total_s for r in runs])
    decode = total - ttft
    n_new = bench_cfg.gen_tokens
    return {
        "perf/load_s": load_s,
        "perf/prefill_tok_s": len(prompt) / float(np.median(ttft)),
        "perf/decode_tok_s": (n_new - 1) / float(np.median(decode)),
        "perf/ttft_s_p50": float(np.median(ttft)),
        "perf/latency_s_p50": float(np.median(total)),
        "perf/latency_s_p95": float(np.percentile(total, 95)),
        "perf/throughput_tok_s": n_new / float(np.median(total)),  # one stream; see benchmark=serving for load
        "perf/peak_rss_bytes": float(rss.peak),
        "perf/rss_increase_bytes": float(rss.peak - rss.start_rss),
    }
