"""The vLLM engine's worker: runs vLLM's offline `LLM` inside the vLLM venv (.venv-vllm), not the runner's.

    .venv-vllm/bin/python runner/engines/workers/vllm_worker.py SETTINGS_JSON

Standard library + vllm only: it never imports `runner` (the runner's venv has no vllm, the vLLM venv has
no runner). Protocol: one JSON object per line on stdin, one answer per line on a private copy of the
original stdout (fd 1 itself is pointed at stderr, where vLLM's own logs and prints go):
  {"op": "logprobs", "ids": [...], "k": K}  -> {"ok": {"rows": [[ids, logprobs], ...]}}   one row per input
      position: row i = the K most likely next tokens after ids[:i+1] (+ the actual next token), as raw
      log-softmax over the full vocabulary; rows 0..n-2 from prompt_logprobs, row n-1 from one generated step
  {"op": "generate", "ids": [...], "new_tokens": N}  -> {"ok": {"ttft_s": .., "total_s": .., "new_tokens": N}}
  {"op": "quit"}  -> {"ok": "bye"}, then exit
An error answers {"error": "..."} and the worker keeps serving. The first line it writes is
{"ready": {...}} once the model is loaded. vLLM sometimes aborts at interpreter exit ("terminate called
without an active exception", exit 134) after every answer is out: the runner accepts that.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its sibling, however this file is run or imported
from jsonlines_protocol import serve  # noqa: E402

# Test hook (tests/test_vllm_cpu.py): abort the way vLLM sometimes does, after the last answer was written.
ABORT_AT_EXIT = "QRUN_VLLM_WORKER_ABORT_AT_EXIT"


def _floats(position) -> list:
    """One position of vLLM's (prompt_)logprobs, {token id: Logprob}, as [[ids], [logprobs]]."""
    return [[int(t) for t in position], [float(lp.logprob) for lp in position.values()]]


class Worker:
    def __init__(self, settings: dict):
        from vllm import LLM

        self.llm = LLM(
            model=settings["model"],
            dtype=settings["dtype"],
            max_logprobs=settings["max_logprobs"],
            enforce_eager=settings["enforce_eager"],
            enable_prefix_caching=False,
            seed=0,
            tensor_parallel_size=settings.get("tensor_parallel_size", 1),
            gpu_memory_utilization=settings.get("gpu_memory_utilization", 0.9),
            max_model_len=settings.get("max_model_len"),
            kv_cache_dtype=settings.get("kv_cache_dtype") or "auto",
            distributed_executor_backend=settings.get("distributed_executor_backend"),
            **(settings.get("engine_args") or {}),  # hardware.vllm_engine_args, names checked by the runner
        )

    def _run(self, ids, **params):
        from vllm import SamplingParams

        sp = SamplingParams(temperature=0.0, ignore_eos=True, detokenize=False, **params)
        return self.llm.generate([{"prompt_token_ids": [int(t) for t in ids]}], sp, use_tqdm=False)[0]

    def logprobs(self, ids, k: int) -> dict:
        out = self._run(ids, max_tokens=1, prompt_logprobs=k, logprobs=k)
        prompt = out.prompt_logprobs  # position 0 is None: nothing predicts the first token
        rows = [_floats(prompt[i]) for i in range(1, len(prompt))] + [_floats(out.outputs[0].logprobs[0])]
        return {"rows": rows}

    def generate(self, ids, new_tokens: int) -> dict:
        """TTFT = a request for 1 token; latency = a request for new_tokens (both prefill: no prefix cache)."""
        start = time.perf_counter()
        self._run(ids, max_tokens=1)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        out = self._run(ids, max_tokens=new_tokens)
        total = time.perf_counter() - start
        n = len(out.outputs[0].token_ids)
        if n != new_tokens:
            raise RuntimeError(f"vLLM generated {n} tokens, {new_tokens} asked")
        return {"ttft_s": ttft, "total_s": total, "new_tokens": n}


def main(settings: dict) -> int:
    def ready() -> dict:
        import vllm

        return {"vllm": vllm.__version__}

    ops = {
        "logprobs": lambda worker, req: worker.logprobs(req["ids"], int(req["k"])),
        "generate": lambda worker, req: worker.generate(req["ids"], int(req["new_tokens"])),
    }
    code = serve(lambda: Worker(settings), ops, ready)
    if code == 0 and os.environ.get(ABORT_AT_EXIT) == "1":
        os.abort()  # SIGABRT: exit status 134 from a shell, -6 from Popen, as vLLM's own abort
    return code


if __name__ == "__main__":  # vLLM starts its engine core with spawn: this guard is required
    sys.exit(main(json.loads(sys.argv[1])))
