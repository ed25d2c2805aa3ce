"""vLLM's OpenAI-compatible server (CUDA only): fp16/bf16, GPTQ, AWQ and compressed-tensors folders.

vLLM finds the quantization in the folder's config.json; tensor parallelism and the share of GPU
memory come from the hardware profile, as for the offline vllm engine. Continuous batching is
vLLM's own: concurrent requests share the GPU. `ignore_eos` + min_tokens make every request
generate exactly gen_tokens; `stream_options.include_usage` reports the counted tokens.
"""
import sys

from runner.gpu import require_cuda
from runner.serving.process import ServerSpec


def build_cmd(artifact_path, served_name: str, bench_cfg, hardware, host: str, port: int) -> list:
    max_len = bench_cfg.prompt_tokens + bench_cfg.gen_tokens + 64
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(artifact_path),
            "--served-model-name", served_name, "--host", host, "--port", str(port),
            "--tensor-parallel-size", str(hardware.tensor_parallel_size),
            "--gpu-memory-utilization", str(hardware.gpu_memory_utilization),
            "--max-model-len", str(max_len), "--max-num-seqs", str(max(bench_cfg.concurrency, 1)), "--seed", "0"]


def spec(artifact, model, bench_cfg, hardware, host: str, port: int) -> ServerSpec:
    require_cuda("format.engine", "the vLLM server", "vllm", "vllm", hardware)
    name = artifact.manifest["format"]
    return ServerSpec(name="vLLM", cmd=build_cmd(artifact.path, name, bench_cfg, hardware, host, port), host=host,
                      port=port, health_path="/health", model=name, env={"HF_HUB_OFFLINE": "1"},
                      extra_body={"ignore_eos": True, "min_tokens": bench_cfg.gen_tokens,
                                  "stream_options": {"include_usage": True}})
