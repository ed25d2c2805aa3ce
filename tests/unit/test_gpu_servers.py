"""The seed's scenario on GPUs, composed on a CPU: which server each seed format gets on 2x RTX 3090, and the command
each server's spec(...) builds there (vLLM's parallelism, context and KV dtype; llama-server's offload and split;
the EXL2 server's cache); vLLM's own log lines read back; the EXL2 server's OpenAI stream, driven by the runner's load
generator over a stand-in generator (exllamav2 itself needs CUDA)."""

import asyncio
import json
import logging
import threading
from types import SimpleNamespace

import httpx
import pytest
from hydra import compose, initialize_config_dir

from helpers import ROOT
from runner.benchmark.loadgen import run_load
from runner.benchmark.servers import ServerSpec
from runner.config.schema import register_configs
from runner.errors import UserError
from runner.stages import check_config

register_configs()

SEED = ["experiment=seed_table", "deployment=rtx3090x2_50users", "model=hf", "model.id=/models/Llama-3.1-8B"]


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        # this 2-core box runs the 8-thread profile's checks with one thread
        return compose(config_name="config", overrides=[*SEED, "hardware.threads=1", *overrides])


def _args(cmd):
    """--flag value pairs of a command line (flags without a value map to None)."""
    return {a: (cmd[i + 1] if i + 1 < len(cmd) and not cmd[i + 1].startswith("--") else None)
            for i, a in enumerate(cmd) if a.startswith("--")}  # fmt: skip


@pytest.mark.parametrize(
    "fmt, server",
    [
        ("fp16", "vllm"),
        ("int8", "transformers"),  # torchao's INT8 layout: vLLM loads INT8 as compressed-tensors only (below)
        ("gptq_int4", "vllm"),
        ("awq_int4", "vllm"),
        ("gguf_q8_0", "llama_server"),
        ("gguf_q4_k_m", "llama_server"),
        ("gguf_q2_k", "llama_server"),
        ("exl2_4_0bpw", "exllamav2"),
    ],
)
def test_the_seed_scenario_shows_each_formats_server_in_the_composed_config(fmt, server):
    cfg = _compose(f"format={fmt}")
    assert cfg.hardware.name == "rtx3090x2" and cfg.benchmark.kind == "serving"
    assert cfg.benchmark.server == server  # what `qrun ... --cfg job --resolve` prints
    check_config(cfg)  # and the job's own checks accept it


def test_int8_as_compressed_tensors_is_served_by_vllm_on_cuda():
    assert _compose("format=int8", "format.backend=llmcompressor").benchmark.server == "vllm"


def test_benchmark_server_is_derived_not_set():
    assert _compose("format=fp16", "hardware=cpu", "benchmark=default", "~deployment").benchmark.server is None
    with pytest.raises(UserError, match=r"^benchmark.server: 'transformers' set, but the server is derived"):
        check_config(_compose("format=fp16", "benchmark.server=transformers"))


@pytest.fixture
def config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "bfloat16", "vocab_size": 128256}))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1024)
    return tmp_path


def _vllm_spec(monkeypatch, folder, *overrides):
    from runner.benchmark.servers import vllm_server
    from runner.engines.vllm import VllmEngine

    monkeypatch.setattr(VllmEngine, "check_available", lambda self, hardware, what="": None)  # no GPU here
    cfg = _compose("format=fp16", *overrides)
    check_config(cfg)
    artifact = SimpleNamespace(path=folder, manifest={"format": "fp16"})
    return vllm_server.spec(artifact, None, cfg.benchmark, cfg.hardware, "127.0.0.1", 8123), cfg


def test_vllm_on_two_cards_shards_over_both_with_the_scenarios_context(monkeypatch, config_json):
    s, cfg = _vllm_spec(monkeypatch, config_json)
    arg = _args(s.cmd)
    assert arg["--tensor-parallel-size"] == "2" and arg["--data-parallel-size"] == "1"
    # one request of the scenario (256 prompt + 64 output tokens) and a margin, not Llama 3.1's 131072
    assert arg["--max-model-len"] == str(256 + 64 + 64) and arg["--max-num-seqs"] == "50"
    assert arg["--kv-cache-dtype"] == "auto" and "--enforce-eager" not in arg
    assert s.settings["tensor_parallel_size"] == "2" and s.settings["kv_cache_dtype"] == "auto"


def test_vllm_data_parallel_kv_dtype_and_engine_args_reach_its_command(monkeypatch, config_json):
    s, _ = _vllm_spec(
        monkeypatch,
        config_json,
        "hardware.tensor_parallel_size=1",
        "hardware.data_parallel_size=2",
        "hardware.kv_cache_dtype=fp8",
        "+hardware.vllm_engine_args.enable_chunked_prefill=false",
        "+hardware.vllm_engine_args.max_num_batched_tokens=4096",
    )
    arg = _args(s.cmd)
    assert arg["--tensor-parallel-size"] == "1" and arg["--data-parallel-size"] == "2"
    assert arg["--kv-cache-dtype"] == "fp8"
    assert "--no-enable-chunked-prefill" in s.cmd and arg["--max-num-batched-tokens"] == "4096"
    assert json.loads(s.settings["engine_args"]) == {"enable_chunked_prefill": False, "max_num_batched_tokens": 4096}


@pytest.mark.parametrize(
    "overrides, key, says",
    [
        (
            ["hardware.data_parallel_size=2"],
            "hardware.data_parallel_size",
            "tensor parallel 2 x data parallel 2 needs 4 GPUs and the profile has 2",
        ),
        (["hardware.kv_cache_dtype=int3"], "hardware.kv_cache_dtype", "unknown KV cache dtype 'int3'"),
        (
            ["+hardware.vllm_engine_args.max_model_len=4096"],
            "hardware.vllm_engine_args.max_model_len",
            "the runner sets max_model_len itself",
        ),
        (
            ["+hardware.vllm_engine_args.Enable-Chunked-Prefill=true"],
            "hardware.vllm_engine_args.Enable-Chunked-Prefill",
            "'Enable-Chunked-Prefill' is not a vLLM engine argument name",
        ),
    ],
)
def test_bad_gpu_serving_settings_are_one_line_errors_before_any_work(overrides, key, says):
    with pytest.raises(UserError, match=f"^{key}: {says}") as e:
        check_config(_compose("format=fp16", *overrides))
    assert "\n" not in str(e.value) and "fix:" in str(e.value)


def test_an_engine_argument_vllm_does_not_have_is_refused_with_the_closest_name(tmp_path, monkeypatch):
    from runner.engines import vllm

    site = tmp_path / "lib" / "python3.11" / "site-packages" / "vllm" / "engine"
    site.mkdir(parents=True)
    (site / "arg_utils.py").write_text(
        "class EngineArgs:\n    model: str = 'x'\n    enable_chunked_prefill: bool = None\n    swap_space: float = 4\n"
    )
    monkeypatch.setattr(vllm, "venv_dir", lambda: tmp_path)
    monkeypatch.setattr(vllm, "installed_version", lambda: "vllm 0.test")
    vllm.check_engine_args(SimpleNamespace(vllm_engine_args={"enable_chunked_prefill": True}))
    with pytest.raises(UserError, match=r"^hardware.vllm_engine_args.enable_chunk_prefill: .*fix: use enable_chunked"):
        vllm.check_engine_args(SimpleNamespace(vllm_engine_args={"enable_chunk_prefill": True}))


def test_vllms_offline_eval_gets_a_max_model_len_covering_its_window(config_json):
    from runner.engines.vllm import offline_settings

    cfg = _compose("format=fp16", "hardware.kv_cache_dtype=fp8_e5m2", "+hardware.vllm_engine_args.swap_space=2")
    window = cfg.eval.ctx_len + 1  # the evaluate stage's longest window and the one generated position
    settings = offline_settings(config_json, cfg.hardware, window)
    assert settings["max_model_len"] == window + 64 and settings["tensor_parallel_size"] == 2
    assert settings["kv_cache_dtype"] == "fp8_e5m2" and settings["engine_args"] == {"swap_space": 2}
    # never above the model's own limit, which vLLM refuses (a short-context model: the limit itself)
    (config_json / "config.json").write_text(json.dumps({"dtype": "bfloat16", "max_position_embeddings": 540}))
    assert offline_settings(config_json, cfg.hardware, window)["max_model_len"] == 540


# vLLM's own log lines, as its source formats them (vllm 0.32: v1/core/kv_cache_utils.py, platforms/cuda.py,
# model_executor/kernels/linear/__init__.py), behind its logger's prefix
PREFIX = "(EngineCore_DP0 pid=4242) INFO 12-07 23:00:00 [{}] "
KV_FORMAT = "%s KV cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx"
BACKEND_FORMAT = "Using %s attention backend out of potential backends: %s."
CHOSEN_BACKEND_FORMAT = "Using %s backend."
KERNEL_FORMAT = "Using %s for mixed-precision linear"
VLLM_LINES = [
    PREFIX.format("kv_cache_utils.py:2327") + KV_FORMAT % ("GPU", f"{452112:,}", f"{384:,}", 1177.375),
    PREFIX.format("cuda.py:506")
    + BACKEND_FORMAT % ("FLASH_ATTN", "['FLASH_ATTN', 'FLASHINFER', 'TRITON_ATTN', 'FLEX_ATTENTION']"),
    PREFIX.format("__init__.py:923") + KERNEL_FORMAT % "MarlinLinearKernel",
]


def test_vllms_log_lines_give_its_kv_cache_concurrency_backend_and_kernel(tmp_path):
    from runner import metrics as M
    from runner.benchmark.memory_need import engine_reported_kv
    from runner.benchmark.serving import server_tags
    from runner.engines.vllm import reported

    report = reported("\n".join(["INFO starting", *VLLM_LINES, "INFO Application startup complete."]))
    assert (report.kv_cache_tokens, report.max_concurrency, report.max_concurrency_tokens) == (452112, 1177.38, 384)
    assert report.attention_backend == "FLASH_ATTN" and report.linear_kernel == "MarlinLinearKernel"
    chosen = PREFIX.format("cuda.py:446") + CHOSEN_BACKEND_FORMAT % "FLASHINFER"
    assert reported(chosen).attention_backend == "FLASHINFER"
    (tmp_path / "server.log").write_text("\n".join(VLLM_LINES) + "\n")
    assert engine_reported_kv(tmp_path / "server.log") == {
        M.MEMORY_ENGINE_KV_CACHE_TOKENS: 452112.0,
        M.MEMORY_ENGINE_MAX_CONCURRENCY: 1177.38,
    }
    (tmp_path / "server.json").write_text(json.dumps({"server": "vllm", "version": "vllm 0.32", "settings": {}}))
    (tmp_path / "server_command.sh").write_text("vllm serve\n")
    tags = server_tags(tmp_path)
    assert tags["serving.server.attention_backend"] == "FLASH_ATTN"
    assert tags["serving.server.linear_kernel"] == "MarlinLinearKernel"


def test_the_vllm_workers_log_goes_to_the_job_log_and_is_read(tmp_path):
    from runner.engines.vllm import VllmReport, WorkerProcess

    handler = logging.FileHandler(tmp_path / "job.log")
    logging.getLogger().addHandler(handler)
    try:
        worker = object.__new__(WorkerProcess)  # its stderr reader alone: no vLLM process
        worker.report = VllmReport()
        for line in VLLM_LINES:
            worker.on_stderr_line(line + "\n")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert worker.kv_cache_tokens == 452112 and worker.report.attention_backend == "FLASH_ATTN"
    assert "vllm: " + VLLM_LINES[0] in (tmp_path / "job.log").read_text()


@pytest.fixture
def fake_llama_server(tmp_path, monkeypatch):
    from runner.benchmark.servers import llama_server as L
    from runner.system import llama_cpp_tools

    bin_dir = tmp_path / "build" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / L.TOOL).write_text("#!/bin/sh\n")
    (bin_dir / L.TOOL).chmod(0o755)
    monkeypatch.setenv(llama_cpp_tools.BIN_DIR_ENV, str(bin_dir))
    monkeypatch.setattr(L, "version", lambda binary: "llama.cpp (stand-in)")
    monkeypatch.setattr(L, "get_engine", lambda name: SimpleNamespace(flash_attention=lambda artifact, hw: None))
    monkeypatch.setattr(L, "weight_repacking", lambda: True)
    artifact = SimpleNamespace(path=tmp_path, manifest={"format": "gguf_q4_k_m", "weight_files": ["model.gguf"]})

    def spec(*overrides):
        cfg = _compose("format=gguf_q4_k_m", *overrides)
        return L.spec(artifact, None, cfg.benchmark, cfg.hardware, "127.0.0.1", 8123)

    return spec, tmp_path / "build"


def test_llama_server_puts_every_layer_on_the_profiles_gpus(fake_llama_server):
    spec, build = fake_llama_server
    (build / "CMakeCache.txt").write_text("GGML_NATIVE:BOOL=ON\nGGML_CUDA:BOOL=ON\n")
    s = spec()
    arg = _args(s.cmd)
    assert arg["--n-gpu-layers"] == "999" and arg["--split-mode"] == "layer" and arg["--tensor-split"] == "1,1"
    assert s.settings["tensor_split"] == "1,1" and s.settings["n_gpu_layers"] == "999"
    assert (
        _args(spec("hardware.n_gpu_layers=20", "hardware.n_gpus=4", "hardware.tensor_parallel_size=1").cmd)[
            "--tensor-split"
        ]
        == "1,1,1,1"
    )
    cpu = _args(spec("hardware=cpu").cmd)
    assert cpu["--n-gpu-layers"] == "0" and "--tensor-split" not in cpu


def test_llama_server_built_without_cuda_is_refused_on_a_gpu_profile(fake_llama_server):
    spec, build = fake_llama_server
    (build / "CMakeCache.txt").write_text("GGML_NATIVE:BOOL=ON\nGGML_CUDA:BOOL=OFF\n")
    with pytest.raises(UserError, match="^hardware.device: llama-server at .* was built without CUDA"):
        spec()
    spec("hardware=cpu")  # on the CPU it is the right build


def test_llama_cpp_tools_build_with_cuda_where_nvcc_and_a_gpu_driver_exist(tmp_path, monkeypatch):
    from runner.system import llama_cpp_tools as T

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.delenv(T.CUDA_ENV, raising=False)
    monkeypatch.setattr(T, "NVIDIA_DRIVER", tmp_path / "driver-version")
    cpu_home = T.home()
    assert "-DGGML_CUDA=ON" not in T.cmake_flags() and not cpu_home.name.endswith("-cuda")
    (tmp_path / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.8, V12.8.93'\n")
    (tmp_path / "nvcc").chmod(0o755)
    # the CUDA toolkit on a machine without a GPU driver (a CUDA build would not start there): a CPU build
    assert "-DGGML_CUDA=ON" not in T.cmake_flags() and T.home() == cpu_home
    (tmp_path / "driver-version").write_text("NVRM version: 580\n")
    assert T.cmake_flags()[-2:] == ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={tmp_path / 'nvcc'}"]
    assert T.home().name.endswith("-cuda") and T.home() != cpu_home  # its own build folder (the cache key)
    monkeypatch.setenv(T.CUDA_ENV, "0")
    assert T.home() == cpu_home
    (tmp_path / "driver-version").unlink()
    monkeypatch.setenv(T.CUDA_ENV, "1")  # make venv-gpu asks for it whatever the driver says
    assert T.home().name.endswith("-cuda")


def test_exl2_server_cache_is_slots_times_context_and_weights_split_over_the_profiles_cards(monkeypatch, tmp_path):
    from runner.benchmark.servers import exl2_server
    from runner.engines.exllamav2 import ExLlamaV2Engine

    monkeypatch.setattr(ExLlamaV2Engine, "check_available", lambda self, hardware: None)  # no GPU here
    (tmp_path / "output.safetensors").write_bytes(b"\0" * 4096)
    cfg = _compose("format=exl2_4_0bpw")
    artifact = SimpleNamespace(path=tmp_path, manifest={"format": "exl2_4_0bpw"})
    s = exl2_server.spec(artifact, None, cfg.benchmark, cfg.hardware, "127.0.0.1", 8123)
    arg = _args(s.cmd)
    # 50 users, each 256 + 64 tokens (+ 64 of re-tokenization margin) in 256-token pages: 2 pages per slot
    assert arg["--slots"] == "50" and arg["--context-per-slot"] == "512"
    assert s.settings["kv_cache_tokens"] == str(50 * 512)
    split = [float(x) for x in arg["--gpu-split"].split(",")]
    assert len(split) == 2 and split[1] == round(24 * 0.9, 2)  # the last card: up to its share of its 24 GiB
    assert s.prompt_ids and s.extra_body["ignore_eos"] and s.extra_body["stream_options"] == {"include_usage": True}
    assert arg["--host"] == "127.0.0.1" and s.cmd[1].endswith("runner/engines/workers/exl2_server.py")


def test_the_exl2_servers_cache_line_is_read_back_as_its_kv_cache_size(tmp_path):
    from runner import metrics as M
    from runner.benchmark.memory_need import engine_reported_kv
    from runner.engines.workers.exl2_server import startup_line

    (tmp_path / "server.log").write_text("loading\n" + startup_line("exl2_4_0bpw", 50, 512) + "\n")
    assert engine_reported_kv(tmp_path / "server.log") == {M.MEMORY_ENGINE_KV_CACHE_TOKENS: 25600.0}


def test_the_exl2_server_refuses_a_context_that_is_not_whole_pages_before_loading():
    from runner.engines.workers.exl2_server import main

    args = ["--model", "/nowhere", "--port", "0", "--slots", "4", "--gpu-split", "20", "--served-name", "x"]
    with pytest.raises(SystemExit, match="multiple of 256"):
        main([*args, "--context-per-slot", "500"])


def test_exllamav2_offline_cache_and_split_arithmetic():
    from runner.engines.exllamav2 import cache_length, gpu_split_gib

    assert cache_length(513, 131072) == 768  # the eval window (512 + 1) in pages, not the model's 131072
    assert cache_length(None, 131072) == 131072 and cache_length(10_000, 4096) == 4096
    gib = 2**30
    # 8 GiB of weights over two 24 GiB cards: half each (+5 % + 0.5 GiB of fixed buffers) on the first
    assert gpu_split_gib(8 * gib, 2, 24 * gib, 0.9) == [4.7, 21.6]
    assert gpu_split_gib(8 * gib, 1, 24 * gib, 0.9) == [21.6]


class StandInGenerator:
    """ExLlamaV2DynamicGenerator's interface as the EXL2 server uses it: one token per job per iterate()."""

    def __init__(self):
        self.jobs = []

    def enqueue(self, job):
        self.jobs.append(job)

    def cancel(self, job):
        self.jobs.remove(job)

    def num_remaining_jobs(self):
        return len(self.jobs)

    def iterate(self):
        out = []
        for job in list(self.jobs):
            job["made"] += 1
            eos = job["made"] >= job["max_new_tokens"]
            r = {"stage": "streaming", "identifier": job["identifier"], "eos": eos, "text": f" t{job['made']}"}
            r["token_ids"] = [1000 + job["made"]]
            if eos:
                r["eos_reason"] = "max_new_tokens"
                self.jobs.remove(job)
            out.append(r)
        return out


@pytest.fixture
def exl2_server():
    from runner.engines.workers import exl2_server as X

    def make_job(request, identifier):
        return {**request, "identifier": identifier, "made": 0}

    state = {"served_name": "exl2_4_0bpw", "max_context": 512, "ready": True, "encode": lambda text: [7] * 10}
    state["scheduler"] = X.Scheduler(StandInGenerator(), make_job)
    httpd = X.serve(state, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_the_exl2_server_streams_what_the_load_generator_counts(exl2_server):
    spec = ServerSpec(
        name="exl2",
        cmd=[],
        host="127.0.0.1",
        port=exl2_server,
        health_path="/health",
        model="exl2_4_0bpw",
        extra_body={"ignore_eos": True, "min_tokens": 16, "stream_options": {"include_usage": True}},
        prompt_ids=True,
    )
    load = SimpleNamespace(
        concurrency=4, arrival="closed", gen_tokens=16, request_timeout_s=30.0, max_duration_s=60.0, rate=1.0
    )
    results = asyncio.run(run_load(spec, [[1, 2, 3]] * 6 + [[5] * 300], load))
    assert [r.status for r in results] == ["ok"] * 7, [r.error for r in results]
    assert all(r.output_tokens == 16 and r.ttft_s <= r.latency_s for r in results)
    assert httpx.get(f"http://127.0.0.1:{exl2_server}/health").status_code == 200


def test_the_exl2_server_answers_openai_chunks_and_refuses_what_it_does_not_do(exl2_server):
    url = f"http://127.0.0.1:{exl2_server}/v1/completions"
    body = {"model": "exl2_4_0bpw", "prompt": "some text", "max_tokens": 3, "stream": True, "return_token_ids": True}
    body["stream_options"] = {"include_usage": True}
    with httpx.stream("POST", url, json=body, timeout=10) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["token_ids"] for c in chunks[:3]] == [[1001], [1002], [1003]]
    assert chunks[0]["object"] == "text_completion" and chunks[3]["choices"][0]["finish_reason"] == "length"
    assert chunks[4]["choices"] == [] and chunks[4]["usage"] == {
        "prompt_tokens": 10,  # the text, encoded by the server's tokenizer
        "completion_tokens": 3,
        "total_tokens": 13,
    }
    plain = httpx.post(url, json={**body, "stream": False}, timeout=10).json()
    assert plain["choices"][0]["text"] == " t1 t2 t3" and plain["usage"]["completion_tokens"] == 3
    for bad, says in (
        ({"temperature": 0.7}, "greedy"),
        ({"max_tokens": 600}, "exceed this server's context per sequence (512)"),
        ({"model": "other"}, "not served here"),
        ({"prompt": [[1, 2], [3]]}, "one text or one list of token ids"),
    ):
        answer = httpx.post(url, json={**body, **bad}, timeout=10)
        assert answer.status_code == 400 and says in answer.json()["error"]["message"]


def test_the_exl2_server_binds_loopback_only():
    from runner.engines.workers import exl2_server as X

    with pytest.raises(SystemExit, match="not a loopback address"):
        X.serve({}, "0.0.0.0", 0)
