"""The offline benchmark's worker: a fresh process that imports only the engine it runs.

`python -m runner.benchmark.worker REQUEST RESULT` (both pickle files), started by
runner/stages/benchmark.py. Its peak RSS is what a deployment of that engine needs (the engine's
library + Python), not the torch/transformers and earlier stages of the job's own process.
Keep this module's imports light: no runner.formats, runner.stages.*, torch or transformers here.
"""

import logging
import pickle
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

from tqdm import tqdm

from runner.benchmark.probes import TORCH_RESERVED, PeakMemory
from runner.engines import get_engine
from runner.errors import UserError
from runner.system.library_logs import route_library_logs

HEAVY_MODULES = ("torch", "transformers")
ENGINES_WITH_CHILD_PROCESSES = {"vllm", "openvino"}  # the engine runs in a child process: measure the tree


def run(req: dict) -> dict:
    hardware = SimpleNamespace(**req["hardware"])
    engine = get_engine(req["engine"])
    engine.check_available(hardware)
    artifact = SimpleNamespace(**req["artifact"], checked=True)  # the parent ran engine.check_artifact
    model = SimpleNamespace(**req["model"])
    prompt, n_new = req["prompt"], req["gen_tokens"]
    # Sampling stays light: a busy sampler thread on a small box slows the engine's spinning thread pool
    # (psutil finds children by scanning every process). VmHWM below still gives the exact peak of this process.
    tree = req["engine"] in ENGINES_WITH_CHILD_PROCESSES
    with PeakMemory(tree=tree, gpu=str(hardware.device).startswith("cuda"), interval_s=0.05) as mem:
        start = time.perf_counter()
        loaded = engine.load(artifact, model, hardware, context_tokens=len(prompt) + n_new)
        load_s = time.perf_counter() - start
        try:
            for _ in range(req["warmup"]):
                loaded.generate(prompt, n_new)
            runs = [loaded.generate(prompt, n_new) for _ in tqdm(range(req["repeats"]), desc=req["label"], unit="req")]
        finally:
            loaded.close()
    return {
        "ttft_s": [r.ttft_s for r in runs],
        "total_s": [r.total_s for r in runs],
        "load_s": load_s,
        "new_tokens": [r.new_tokens for r in runs],
        "peak_rss": mem.peak_rss,
        "start_rss": mem.start_rss,
        "hwm_rss": high_water_rss(),
        "peak_pss": mem.peak_pss if mem.pss_measured else None,  # a tree only
        "pss_rss_standins": mem.pss_rss_standins,
        "kv_cache_tokens": loaded.kv_cache_tokens,
        "engine_report": vars(loaded.report) if getattr(loaded, "report", None) is not None else None,  # vLLM's log
        # NVML (our processes' usage, or the cards' used-memory delta where it cannot see them), else torch's peak
        **_vram(mem),
        "heavy_modules": [m for m in HEAVY_MODULES if m in sys.modules],
    }


def high_water_rss():
    """The kernel's peak RSS of this process image (VmHWM), a cross-check of the sampled peak. Not ru_maxrss:
    Linux keeps that across exec, so it starts at the parent's RSS when the parent forked this worker."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _vram(mem: PeakMemory) -> dict:
    if mem.vram_method is not None:
        return {"peak_vram": mem.peak_vram, "peak_vram_by_gpu": mem.peak_vram_by_gpu, "vram_method": mem.vram_method}
    by_gpu = _torch_peak_vram_by_gpu()
    return {
        "peak_vram": sum(by_gpu.values()) or None,
        "peak_vram_by_gpu": by_gpu,
        "vram_method": TORCH_RESERVED if by_gpu else None,
    }


def _torch_peak_vram_by_gpu() -> dict:
    """torch's peak reserved bytes per GPU, for engines that allocate through torch; {} otherwise."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return {}
    peaks = {i: torch.cuda.max_memory_reserved(i) for i in range(torch.cuda.device_count())}
    return {i: n for i, n in peaks.items() if n}


def main(request: Path, result: Path) -> None:
    req = pickle.loads(request.read_bytes())
    _log_like_the_job(req.get("log_file"))
    try:
        out = {"ok": run(req)}
    except UserError as e:
        out = {"user_error": (e.key, e.problem, e.fix)}
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    result.write_bytes(pickle.dumps(out))


def _log_like_the_job(log_file) -> None:
    """The job's log file gets this process's library chatter too (runner/system/library_logs.py); real warnings
    still reach the console (our stderr, which the job forwards)."""
    if not log_file:
        return
    root = logging.getLogger()
    root.addHandler(logging.FileHandler(log_file))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    root.addHandler(console)
    route_library_logs()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
