"""The GGUF eval pass: the engine's `logprobs` (one llama_decode, log-softmax read from llama.cpp's logits
buffer in chunks) vs the previous path (Llama.eval into its `scores` copy, np.array copy, one-shot numpy
log-softmax), on the same file, same threads, same windows, alternating window by window. The old side's
Llama() gets flash attention as the engine's context resolved it (llama.cpp's auto), so both compute the same
attention and only the pass differs.

Prints the median wall and CPU seconds per 512-token window of each side (CPU time, all threads of the
process: steadier than wall time on a shared machine), the ratios new/old, and the largest difference of
the log-probs (they must agree).

    python timings/gguf_eval_pass.py                      # the gguf_q4_k_m artifact in the qrun cache
    python timings/gguf_eval_pass.py model.gguf --threads 2 --windows 8
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from runner.engines.llama_cpp import LlamaCppLoaded  # noqa: E402


def old_logprobs(llm, ids):
    """The pass as it was: Llama.eval with logits_all=True, then copies and a full-size numpy log-softmax."""
    llm.reset()
    llm.eval(ids)
    x = np.array(llm.scores[: len(ids)], dtype=np.float32)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf", nargs="?", help="a .gguf file (default: the gguf_q4_k_m artifact in .qrun_cache)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=8, help="512-token windows per side")
    a = ap.parse_args()
    path = a.gguf or str(next((ROOT / ".qrun_cache" / "artifacts").glob("*/model-q4_k_m.gguf")))
    from llama_cpp import Llama

    new = LlamaCppLoaded(path, SimpleNamespace(threads=a.threads, n_gpu_layers=0))
    old = Llama(
        model_path=path,
        n_ctx=512,
        n_batch=512,
        n_ubatch=512,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        n_gpu_layers=0,
        logits_all=True,
        flash_attn=new.flash_attn == "enabled",
        seed=0,
        verbose=False,
    )
    rng = np.random.default_rng(0)
    windows = [rng.integers(100, new.n_vocab - 100, 512).tolist() for _ in range(a.windows + 1)]
    new.logprobs(windows[0]), old_logprobs(old, windows[0])  # warm-up: first-touch of weights and buffers
    wall = {"old": [], "new": []}
    cpu = {"old": [], "new": []}
    diff = 0.0
    for ids in windows[1:]:
        for side, run in (("old", lambda: old_logprobs(old, ids)), ("new", lambda: new.logprobs(ids))):
            t, c = time.perf_counter(), time.process_time()
            lp = run()
            wall[side].append(time.perf_counter() - t)
            cpu[side].append(time.process_time() - c)
            if side == "old":
                lp_old = lp
        diff = max(diff, float(np.abs(lp_old - lp).max()))
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in wall}
    print(
        f"{Path(path).name}, {a.threads} threads, {a.windows} windows x 512 tokens (medians per window), "
        f"flash attention {new.flash_attn}"
    )
    print(f"old (Llama.eval + copies + numpy log-softmax): wall {med['old'][0]:.3f} s, CPU {med['old'][1]:.3f} s")
    print(f"new (llama_decode + chunked log-softmax):      wall {med['new'][0]:.3f} s, CPU {med['new'][1]:.3f} s")
    print(
        f"ratio new/old: wall {med['new'][0] / med['old'][0]:.2f}, CPU {med['new'][1] / med['old'][1]:.2f}"
        f"   max |logprob difference|: {diff:.2e}"
    )
    new.close()
    old.close()


if __name__ == "__main__":
    main()
