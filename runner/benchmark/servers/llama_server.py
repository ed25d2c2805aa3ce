"""llama.cpp's own OpenAI-compatible server, `llama-server`: how GGUF is deployed to concurrent users.

Built from the llama.cpp revision the installed llama-cpp-python vendors (runner/system/llama_cpp_tools.py,
`make llama-server`), so it runs the same kernels as the llama_cpp engine. Started with one slot per sequence the
load admits (runner/benchmark/capacity.py) and continuous batching, so concurrent requests decode in one batch.
KV cache: with an explicit slot count and no --kv-unified, llama.cpp splits -c evenly over the slots, each slot's
share padded up to a multiple of 256; -c is set to slots x that padded share, so every slot holds one whole request
(prompt + output + a margin for the GGUF vocabulary tokenizing the text prompt a little longer than the HF one).
No prompt reuse of any kind: the server's prompt cache, its RAM cache of idle slots and KV-shift reuse are off, and
each request says cache_prompt=false. Flash attention is passed as llama.cpp resolves its default (auto) for this
file here (runner/engines/llama_cpp.py); weights are repacked, or not, by the engine's rule (weight_repacking).
Requests ask for exactly gen_tokens: max_tokens with ignore_eos, which this server honours; its stream's last chunk
carries `usage` (what the load generator counts) and its own per-request `timings`.
On a CUDA profile every layer goes to the GPUs (--n-gpu-layers 999 for the profile's -1, else its count), split by
whole layers (--split-mode layer) evenly over the profile's n_gpus (--tensor-split 1,1 on two cards); a binary built
without CUDA (no nvcc where it was built, runner/system/llama_cpp_tools.py) is refused there, since it would run on
the CPU and be measured as the GPU deployment.
"""

import subprocess

from runner.benchmark.capacity import admitted_sequences
from runner.benchmark.servers.gguf_serving import GgufServing
from runner.benchmark.servers.process import ServerSpec
from runner.engines import get_engine
from runner.engines.llama_cpp import weight_repacking
from runner.errors import UserError
from runner.system import llama_cpp_tools

TOOL = "llama-server"
CTX_PAD = 256  # llama.cpp rounds each slot's context share up to this (llama_context: n_ctx_seq)
RETOKENIZE_MARGIN = 64


def check_available() -> None:
    if llama_cpp_tools.binary(TOOL) is None:
        raise UserError(
            "benchmark.kind",
            f"the GGUF server llama-server is not built for this machine (looked in {llama_cpp_tools.home()})",
            f"run `{llama_cpp_tools.BUILD_HINT}`, or set {llama_cpp_tools.BIN_DIR_ENV} to a folder holding one",
        )


def version(binary) -> str:
    """llama-server's own build line ('version: N (commit)'), with the bindings release it was vendored in."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    line = next((x for x in (out.stdout + out.stderr).splitlines() if x.startswith("version:")), "version: unknown")
    return f"llama.cpp {line.split(':', 1)[1].strip()} from llama-cpp-python {llama_cpp_tools.version()}"


def ctx_per_slot(bench_cfg) -> int:
    need = int(bench_cfg.prompt_tokens) + int(bench_cfg.gen_tokens) + RETOKENIZE_MARGIN
    return -(-need // CTX_PAD) * CTX_PAD


ALL_LAYERS = 999  # llama.cpp: more layers than any model has offloads all of them


def gpu_layers(hardware) -> int:
    """--n-gpu-layers: the profile's count, its -1 (every layer) as ALL_LAYERS; 0 on CPU."""
    n = int(hardware.n_gpu_layers)
    return ALL_LAYERS if n < 0 else n


def gpu_flags(hardware) -> list:
    """Where the layers go: on a CUDA profile, whole layers split evenly over its n_gpus cards; [] on CPU."""
    if not str(hardware.device).startswith("cuda"):
        return []
    n_gpus = max(int(getattr(hardware, "n_gpus", 0) or 1), 1)
    return ["--split-mode", "layer", "--tensor-split", ",".join(["1"] * n_gpus), "--main-gpu", "0"]


def check_cuda_build(binary, hardware) -> None:
    if str(hardware.device).startswith("cuda") and llama_cpp_tools.built_with_cuda(binary) is False:
        raise UserError(
            "hardware.device",
            f"llama-server at {binary} was built without CUDA (no nvcc on the machine that built it), so it would run "
            f"hardware={hardware.name}'s GGUF deployment on the CPU",
            f"put CUDA's nvcc on PATH (or set CUDA_HOME) and run `{llama_cpp_tools.BUILD_HINT}` (a -cuda build folder)",
        )


def spec(artifact, model, bench_cfg, hardware, host: str, port: int) -> ServerSpec:
    check_available()
    binary = llama_cpp_tools.binary(TOOL)
    check_cuda_build(binary, hardware)
    served = GgufServing(artifact, host, port)
    slots, per_slot = admitted_sequences(bench_cfg), ctx_per_slot(bench_cfg)
    flash = get_engine("llama_cpp").flash_attention(artifact, hardware)
    flash_flag = {"enabled": "on", "disabled": "off"}.get(flash or "", "auto")
    repack = weight_repacking()
    threads = str(hardware.threads)
    cmd = [
        str(binary),
        "--model",
        str(served.gguf),
        "--alias",
        served.alias,
        "--host",
        host,
        "--port",
        str(port),
        "--parallel",
        str(slots),
        "--ctx-size",
        str(slots * per_slot),
        "--no-kv-unified",
        "--cont-batching",
        "--flash-attn",
        flash_flag,
        "--threads",
        threads,
        "--threads-batch",
        threads,
        "--n-gpu-layers",
        str(gpu_layers(hardware)),
        *gpu_flags(hardware),
        "--fit",
        "off",  # never shrink the context set here to fit free memory
        "--no-cache-prompt",
        "--cache-reuse",
        "0",
        "--cache-ram",
        "0",
        "--no-cache-idle-slots",
        "--no-webui",
        "--seed",
        "0",
    ]
    if not repack:
        cmd.append("--no-repack")
    return served.spec(
        "llama-server",
        cmd,
        "/health",
        extra_body={"ignore_eos": True, "cache_prompt": False},
        prompt_ids=True,  # a GGUF's own vocabulary may not tokenize text (the embedded SmolLM2's aborts llama.cpp)
        version=version(binary),
        settings={
            "slots": str(slots),
            "ctx_per_slot": str(per_slot),
            "kv_cache_tokens": str(slots * per_slot),
            "kv_unified": "false",
            "continuous_batching": "true",
            "flash_attention": flash_flag if flash_flag != "auto" else "auto (unreported)",
            "threads": threads,
            "n_gpu_layers": str(gpu_layers(hardware)),
            "tensor_split": dict(zip(gpu_flags(hardware)[::2], gpu_flags(hardware)[1::2])).get(
                "--tensor-split", "none"
            ),
            "prompt_cache": "off",
            "weight_repacking": "on" if repack else "off",
        },
    )
