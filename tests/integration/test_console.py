"""The console of a job shows the job, not its libraries' chatter: llama.cpp's per-tensor fallback lines and
the known-harmless import-time warnings go to the job's log file, which is logged with the MLflow run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, mlflow_runs, run_qrun

NOISE = ("falling back to", "llama_model_loader", "_C_cutlass_90a", "register_constant", "kernels-community")


@pytest.fixture(scope="module")
def narrow_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny Llama with an FFN width of 320: not a multiple of 256, so K-quants fall back on ffn_down and
    llama.cpp prints one warning per such tensor, as on SmolLM2 (576)."""
    from transformers import AutoConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("narrow_llama")
    for f in tiny_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, out / f.name)
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.intermediate_size = 320
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def test_gguf_quantize_console_is_quiet_and_the_log_file_has_it_all(tmp_path, cache_dir, narrow_model_dir):
    db = tmp_path / "mlflow.db"
    proc = run_qrun(
        [
            "model=hf",
            f"model.id={narrow_model_dir}",
            "format=gguf_q4_k_m",
            "stages=[quantize]",
            f"tracking.uri=sqlite:///{db}",
        ],
        tmp_path,
        cache_dir,
    )
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    leaked = [line for line in console.splitlines() if any(n in line for n in NOISE)]
    assert not leaked, f"{len(leaked)} library lines on the console, e.g. {leaked[:3]}"
    assert "quantizing" in console  # the job's own stage lines stay

    logs = list((tmp_path / "outputs").rglob("*.log"))
    assert len(logs) == 1, logs
    text = logs[0].read_text()
    assert text.count("falling back to") >= 2, text[-2000:]  # ffn_down of both layers
    assert "llama_model_loader" in text

    client, runs = mlflow_runs(db)
    assert len(runs) == 1
    logged = [a.path for a in client.list_artifacts(runs[0].info.run_id, "logs")]
    assert logged == [f"logs/{logs[0].name}"]
    local = Path(client.download_artifacts(runs[0].info.run_id, logged[0], str(tmp_path / "dl")))
    assert "falling back to" in local.read_text()


IMPORTS = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="[%(name)s][%(levelname)s] - %(message)s")
logging.getLogger().addHandler(logging.FileHandler(sys.argv[1]))  # as Hydra's job log
from runner.system.library_logs import route_library_logs
route_library_logs()
import torchao.quantization, bitsandbytes  # what an INT8 / NF4 job imports
logging.getLogger("torchao").warning("a real warning stays on the console")
"""


def _run_with_a_job_log(code: str, tmp_path):
    """`code` in a fresh interpreter with its log file as argv[1]: (what reached the console, the log's text)."""
    log = tmp_path / "job.log"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(log)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr, log.read_text()


def test_harmless_import_warnings_go_to_the_job_log(tmp_path):
    console, text = _run_with_a_job_log(IMPORTS, tmp_path)
    assert not [line for line in console.splitlines() if any(n in line for n in NOISE)], console[-2000:]
    assert "a real warning stays on the console" in console
    assert "_C_cutlass_90a" in text and "register_constant" in text


@pytest.mark.slow
def test_the_benchmark_process_sends_its_library_noise_to_the_job_log(tmp_path, cache_dir, tiny_model_dir):
    """The offline benchmark runs in a fresh process (runner/benchmark/worker.py): its imports warn too."""
    proc = run_qrun(
        [
            "model=hf",
            f"model.id={tiny_model_dir}",
            "format=fp32",
            "stages=[quantize,benchmark]",
            "benchmark=quick",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        tmp_path,
        cache_dir,
    )
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    leaked = [line for line in console.splitlines() if any(n in line for n in NOISE)]
    assert not leaked, f"{len(leaked)} library lines on the console, e.g. {leaked[:3]}"
    [log] = list((tmp_path / "outputs").rglob("*.log"))
    assert "register_constant" in log.read_text()


AUTOROUND_LOG = """
import logging, sys
logging.basicConfig(handlers=[logging.FileHandler(sys.argv[1])], level=logging.INFO)
from runner.system.library_logs import route_library_logs
route_library_logs()
from auto_round.logger import logger  # auto-round's own logger, with its own console handler
logger.info("block 3 loss: 0.0123, peak RAM 1.7 GB")
logger.warning("a real auto-round warning")
"""


def test_autoround_progress_lines_go_to_the_job_log(tmp_path):
    console, text = _run_with_a_job_log(AUTOROUND_LOG, tmp_path)
    assert "block 3 loss" not in console and "a real auto-round warning" in console, console[-2000:]
    assert "block 3 loss" in text
