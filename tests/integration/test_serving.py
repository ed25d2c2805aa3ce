"""benchmark=serving on the tiny Llama: a real llama.cpp server (and `transformers serve`) under load.

No mocks: every test starts the real server process, sends real HTTP, and checks afterwards that
the server's PID is gone.
"""

import asyncio
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import QRUN, ROOT, mlflow_runs, process_gone, run_qrun, throttled_spec
from runner.benchmark.loadgen import run_load, summarize
from runner.benchmark.servers import ServerProcess, ServerSpec, pick_port, server_spec
from runner.benchmark.serving import make_prompts, serving_benchmark
from runner.cache import Cache
from runner.config.checks import check_load_config
from runner.config.schema import BenchmarkConfig, register_configs
from runner.data.models import resolve_model
from runner.errors import UserError
from runner.formats.artifacts import quantize
from runner.metrics import PERF_PEAK_PSS_BYTES, PERF_PEAK_RSS_BYTES
from runner.quality.stream import token_stream

register_configs()
LLAMA = "llama_cpp_python"  # the GGUF server these tests start (llama_server is tested with its module)
TINY = [
    "eval.n_tokens=1024",
    "benchmark=serving",
    "benchmark.prompt_tokens=32",
    "benchmark.gen_tokens=8",
    "stages=[quantize,benchmark]",
]


def _cfg(tiny_model_dir, fmt, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["model=hf", f"model.id={tiny_model_dir}", f"format={fmt}", *TINY, *overrides],
        )


def _setup(cache_dir, tiny_model_dir, fmt, *overrides):
    cfg = _cfg(tiny_model_dir, fmt, *overrides)
    cache = Cache(cache_dir)
    model = resolve_model(cfg.model, cache)
    artifact = quantize(model, cfg.format, cfg.calibration, cfg.hardware, cache)
    return cfg, model, artifact, token_stream(model, cfg.eval, cache)


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def qrun_serving(tiny_model_dir, cache_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("serving")
    proc = run_qrun(
        [
            "model=hf",
            f"model.id={tiny_model_dir}",
            "format=gguf_q8_0",
            f"format.server={LLAMA}",
            *TINY,
            "benchmark.concurrency=4",
            "benchmark.requests=16",
        ],
        cwd,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = mlflow_runs(cwd / "mlflow.db")
    return cwd, proc, client, runs[0]


def test_closed_loop_metrics_are_consistent(qrun_serving):
    cwd, proc, client, run = qrun_serving
    m = run.data.metrics
    assert (m["serving/requests_ok"], m["serving/requests_failed"], m["serving/requests_not_sent"]) == (16, 0, 0)
    assert m["serving/output_tokens"] == 16 * 8  # EOS suppressed: every request made exactly gen_tokens
    for name in ("ttft_s", "tpot_s", "latency_s"):
        assert 0 < m[f"serving/{name}_p50"] <= m[f"serving/{name}_p95"] <= m[f"serving/{name}_p99"]
    assert m["serving/ttft_s_p99"] <= m["serving/latency_s_p99"]
    assert m["serving/throughput_tok_s"] * m["serving/duration_s"] == pytest.approx(
        m["serving/output_tokens"], rel=1e-6
    )
    assert m["serving/requests_per_s"] * m["serving/duration_s"] == pytest.approx(16, rel=1e-6)
    assert 0 <= m["serving/slo_attainment"] <= 1 and m["perf/peak_rss_bytes"] > 0
    # memory: the server tree's PSS beside its summed RSS, and the computed need at the load -- the tiny Llama's
    # 2 layers x 2 KV heads x head dim 64 x (K, V) x f16 = 1024 bytes per token, for 4 users x (32 + 8) tokens
    assert 0 < m["perf/peak_pss_bytes"] <= m["perf/peak_rss_bytes"] and m["perf/pss_rss_standins"] == 0
    assert m["memory/kv_bytes_per_token"] == 1024
    assert m["memory/need_bytes"] == m["size/bytes"] + 1024 * 4 * (32 + 8)
    assert run.data.params["memory.need_load"] == "weights + KV cache at 4 user(s) x 40 tokens"
    assert not {"perf/throughput_tok_s", "perf/latency_s_p95", "perf/ttft_s_p50"} & set(
        m
    )  # the offline benchmark's names
    # the CSV is the raw data: the logged metrics recompute from it
    local = next(cwd.glob("outputs/*/*/artifacts/serving/requests.csv"))
    rows = _csv(local)
    assert sorted(int(r["idx"]) for r in rows) == list(range(16)) and {r["status"] for r in rows} == {"ok"}
    lat = np.array([float(r["latency_s"]) for r in rows])
    assert m["serving/latency_s_p95"] == pytest.approx(np.percentile(lat, 95))
    sent, end = [float(r["sent_s"]) for r in rows], [float(r["sent_s"]) + float(r["latency_s"]) for r in rows]
    assert m["serving/duration_s"] == pytest.approx(max(end) - min(sent))
    assert m["serving/duration_s"] < lat.sum()  # 4 users overlapped
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "artifacts/serving")}
    assert {
        "artifacts/serving/requests.csv",
        "artifacts/serving/latency_cdf.png",
        "artifacts/serving/server.log",
    } <= logged


def test_server_is_gone_after_the_run(qrun_serving):
    _, proc, _, _ = qrun_serving
    pids = [
        int(p) for p in re.findall(r"started (?:llama-server|llama.cpp) server, pid (\d+)", proc.stdout + proc.stderr)
    ]
    assert len(pids) == 1 and process_gone(pids[0])


def test_non_loopback_host_and_unbounded_load_are_refused():
    base = OmegaConf.structured(BenchmarkConfig(name="x"))
    for host in ("10.1.2.3", "example.com", "0.0.0.0"):
        with pytest.raises(UserError, match="^benchmark.host: .*loopback") as e:
            check_load_config(OmegaConf.merge(base, {"host": host}))
        assert "\n" not in str(e.value)
    for key, value in (("requests", 10**6), ("concurrency", 0), ("max_duration_s", 10**6), ("arrival", "burst")):
        with pytest.raises(UserError, match=f"^benchmark.{key}:"):
            check_load_config(OmegaConf.merge(base, {key: value}))
    spec = ServerSpec(name="x", cmd=[], host="192.168.1.1", port=80, health_path="/", model="m")
    with pytest.raises(UserError, match="benchmark.host"):
        asyncio.run(run_load(spec, ["hi"], base))


def test_busy_port_is_a_one_line_error(tiny_model_dir, cache_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg, model, artifact, stream = _setup(cache_dir, tiny_model_dir, "gguf_q8_0", f"benchmark.port={port}")
        with pytest.raises(UserError, match=f"^benchmark.port: port {port} on 127.0.0.1 is already in use") as e:
            serving_benchmark(artifact, model, cfg.benchmark, stream, cfg.hardware, LLAMA, out_dir=tmp_path)
        assert "\n" not in str(e.value)


def test_never_healthy_server_times_out_and_is_killed(tmp_path):
    spec = ServerSpec(
        name="silent",
        cmd=[sys.executable, "-c", "import time; time.sleep(600)"],
        host="127.0.0.1",
        port=1,
        health_path="/health",
        model="m",
    )
    server = ServerProcess(spec, tmp_path / "server.log").start()
    with pytest.raises(
        UserError, match="^benchmark.startup_timeout_s: the silent server did not answer /health within 1.5 s"
    ):
        server.wait_healthy(1.5)
    assert process_gone(server.pid)
    crash = ServerSpec(
        name="crash",
        cmd=[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
        host="127.0.0.1",
        port=1,
        health_path="/health",
        model="m",
    )
    server = ServerProcess(crash, tmp_path / "crash.log").start()
    with pytest.raises(RuntimeError, match="exited with code 3 before it was healthy(.|\n)*boom"):
        server.wait_healthy(30)


def test_server_memory_includes_its_start_up_peak(tiny_model_dir, cache_dir, tmp_path, monkeypatch):
    """A server that peaks at 300 MB while it loads and serves in a few tens of MB: the budget is held against the
    start-up peak too (the offline benchmark's memory includes the load as well)."""
    from runner.benchmark import serving

    cfg, model, artifact, stream = _setup(cache_dir, tiny_model_dir, "gguf_q8_0", "benchmark.requests=4")
    spec = throttled_spec(0.05, startup_peak_mb=300)  # a real server process; only which server runs is chosen here
    monkeypatch.setattr(serving, "server_spec", lambda *args, **kwargs: spec)
    m = serving_benchmark(artifact, model, cfg.benchmark, stream, cfg.hardware, cfg.format.engine, out_dir=tmp_path)
    assert m["serving/requests_ok"] == 4
    assert m[PERF_PEAK_RSS_BYTES] > 300 * 1024**2, m[PERF_PEAK_RSS_BYTES]
    assert m[PERF_PEAK_PSS_BYTES] > 300 * 1024**2, m  # the server's tree, from its launch on
    assert process_gone(json.loads((tmp_path / "server.json").read_text())["pid"])


@pytest.fixture(scope="module")
def llama_server(tiny_model_dir, cache_dir, tmp_path_factory):
    cfg, model, artifact, stream = _setup(cache_dir, tiny_model_dir, "gguf_q8_0")
    spec = server_spec(artifact, LLAMA, model, cfg.benchmark, cfg.hardware, port=pick_port("127.0.0.1", 0))
    with ServerProcess(spec, tmp_path_factory.mktemp("llama_server") / "server.log") as server:
        server.wait_healthy(120)
        yield cfg, model, stream, server
    assert process_gone(server.pid)


def test_poisson_arrivals_and_time_cap_account_for_every_request(llama_server):
    cfg, model, stream, server = llama_server
    texts, lengths = make_prompts(stream, model.load_tokenizer(), 12, 32)
    poisson = OmegaConf.merge(cfg.benchmark, {"arrival": "poisson", "rate": 20.0, "concurrency": 2})
    res = asyncio.run(run_load(server.spec, texts[:6], poisson, lengths[:6]))
    assert [r.status for r in res] == ["ok"] * 6 and all(r.output_tokens == 8 for r in res)
    assert [r.sent_s for r in res] == sorted(r.sent_s for r in res) and res[-1].sent_s > 0.05  # spread out
    # a 0.5 s cap on a load that needs longer: what ran out of time is failed or not sent, never dropped
    capped = OmegaConf.merge(cfg.benchmark, {"concurrency": 1, "max_duration_s": 0.5, "gen_tokens": 60})  # n_ctx 104
    res = asyncio.run(run_load(server.spec, texts, capped, lengths))
    statuses = [r.status for r in res]
    assert len(res) == 12 and statuses.count("not_sent") >= 1
    assert statuses.count("ok") + statuses.count("failed") + statuses.count("not_sent") == 12
    assert all("max_duration_s" in r.error for r in res if r.status == "failed"), [r.error for r in res]
    m = summarize(res, cfg.benchmark.slo)
    assert m["serving/requests_ok"] + m["serving/requests_failed"] + m["serving/requests_not_sent"] == 12
    assert server.alive()


def test_server_dying_mid_run_fails_clearly_with_every_request_counted(tiny_model_dir, cache_dir, tmp_path):
    cfg, model, artifact, stream = _setup(
        cache_dir,
        tiny_model_dir,
        "gguf_q8_0",
        "benchmark.requests=100",
        "benchmark.concurrency=2",
        "benchmark.gen_tokens=64",
    )
    killed = {}

    def kill_after_two_requests():  # SIGKILL the real server once the load is under way
        log = tmp_path / "server.log"
        while not (log.exists() and log.read_text(errors="replace").count("POST /v1/completions") >= 3):
            time.sleep(0.05)
        killed["pid"] = json.loads((tmp_path / "server.json").read_text())["pid"]
        os.kill(killed["pid"], signal.SIGKILL)

    threading.Thread(target=kill_after_two_requests, daemon=True).start()
    with pytest.raises(
        RuntimeError, match=r"exited with code -9 during the load: \d+ ok, \d+ failed or not sent of 100"
    ):
        serving_benchmark(artifact, model, cfg.benchmark, stream, cfg.hardware, LLAMA, out_dir=tmp_path)
    rows = _csv(tmp_path / "requests.csv")
    assert len(rows) == 100 and sum(r["status"] == "failed" for r in rows) >= 1
    assert all(r["error"] for r in rows if r["status"] == "failed")
    assert process_gone(killed["pid"])


def test_transformers_serve_runs_torch_artifacts(tiny_model_dir, cache_dir, tmp_path):
    cfg, model, artifact, stream = _setup(
        cache_dir, tiny_model_dir, "fp32", "benchmark.requests=4", "benchmark.concurrency=2"
    )
    m = serving_benchmark(artifact, model, cfg.benchmark, stream, cfg.hardware, "transformers", out_dir=tmp_path)
    assert (m["serving/requests_ok"], m["serving/output_tokens"]) == (4, 32)
    assert m["serving/ttft_s_p50"] <= m["serving/ttft_s_p95"] <= m["serving/ttft_s_p99"]
    assert "transformers" in (tmp_path / "server.json").read_text()


def test_vllm_server_command(tiny_model_dir):
    from runner.benchmark.servers.vllm_server import build_cmd, spec

    cfg = _cfg(tiny_model_dir, "fp16", "hardware=rtx3090x2", "benchmark.concurrency=50")
    cmd = build_cmd(Path("/art/gptq"), "gptq_int4", cfg.benchmark, cfg.hardware, "127.0.0.1", 8123)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    args = dict(zip(cmd[3::2], cmd[4::2]))
    assert args == {
        "--model": "/art/gptq",
        "--served-model-name": "gptq_int4",
        "--host": "127.0.0.1",
        "--port": "8123",
        "--tensor-parallel-size": "2",
        "--data-parallel-size": "1",
        "--kv-cache-dtype": "auto",
        "--gpu-memory-utilization": str(cfg.hardware.gpu_memory_utilization),
        "--max-model-len": str(32 + 8 + 64),
        "--max-num-seqs": "50",
        "--seed": "0",
    }
    import torch

    if not torch.cuda.is_available():
        art = type("A", (), {"path": Path("/art"), "manifest": {"format": "fp16"}})()
        with pytest.raises(UserError, match="^format.server: the vLLM server needs a CUDA GPU"):
            spec(art, None, cfg.benchmark, cfg.hardware, "127.0.0.1", 8123)


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(signal.SIGINT, marks=pytest.mark.slow),
        signal.SIGTERM,
        pytest.param(signal.SIGKILL, marks=pytest.mark.slow),
    ],
    ids=["SIGINT", "SIGTERM", "SIGKILL"],
)
def test_interrupted_qrun_leaves_no_server(sig, tiny_model_dir, cache_dir, tmp_path, qrun_serving):
    """Ctrl-C (SIGINT), SIGTERM: qrun stops the server itself. SIGKILL: the kernel's parent-death signal does."""
    env = dict(os.environ, QRUN_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    args = [
        "model=hf",
        f"model.id={tiny_model_dir}",
        "format=gguf_q8_0",
        f"format.server={LLAMA}",
        *TINY,
        "benchmark.requests=900",
        "benchmark.gen_tokens=64",
        "benchmark.concurrency=2",
    ]
    proc = subprocess.Popen(
        QRUN + args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # as from a terminal, even
    # when pytest itself runs in the background (where SIGINT is ignored, and children inherit that)
    pid, lines = None, []
    try:
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r"started (?:llama-server|llama.cpp) server, pid (\d+)", line)
            pid = int(found.group(1)) if found else pid
            if "healthy after" in line:
                break
        assert pid and psutil.pid_exists(pid), "".join(lines[-30:])
        time.sleep(1.0)  # mid-load
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig != signal.SIGKILL:
        assert proc.returncode not in (0, -signal.SIGKILL)  # qrun stopped by itself, with an error status
    assert process_gone(pid, within_s=15), f"server pid {pid} outlived qrun ({sig.name})"
