"""llama.cpp's OpenAI-compatible server, as llama-cpp-python ships it (`python -m llama_cpp.server`).

It runs one request at a time (no continuous batching): concurrent requests queue inside it, so
TTFT under load includes that wait. `--interrupt_requests False`: its default cuts a streaming
response short whenever another request arrives, which would fake short latencies under load.
Prefix caching is off (`--cache False`); the one reuse it cannot turn off -- a request's common prefix
with the previous request in the same context -- meets distinct prompts (runner/benchmark/serving.py).
llama-cpp-python's `Llama` (which the server builds) departs from llama.cpp's own defaults in two places, set back
here: flash attention (llama.cpp: auto; passed as auto resolves on this machine, see runner/engines/llama_cpp.py)
and the YaRN factors (llama.cpp: -1, read from the model). Where the engine keeps weights out of llama.cpp's
repacked buffers (weight_repacking: AMX), the server does too: its Llama() takes its model params from
llama_model_default_params(), which a short launcher sets before the server starts (it has no flag for it).
Text is tokenized with the base model's HF tokenizer (the one the eval stream uses): the GGUF's
own vocabulary is only used when the model folder has no tokenizer.
"""

import sys

from runner.benchmark.servers.gguf_serving import GgufServing
from runner.benchmark.servers.process import ServerSpec, require_modules
from runner.engines import get_engine
from runner.engines.llama_cpp import NO_AMX_REPACK_PRELUDE, weight_repacking
from runner.system.packages import dist_versions

NO_REPACK_LAUNCHER = (
    NO_AMX_REPACK_PRELUDE + "import runpy\nrunpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)
NEEDS = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


def check_available() -> None:
    require_modules(NEEDS, "the llama.cpp server")


def spec(artifact, model, bench_cfg, hardware, host: str, port: int) -> ServerSpec:
    check_available()
    served = GgufServing(artifact, host, port)
    n_ctx = bench_cfg.prompt_tokens + bench_cfg.gen_tokens + 64  # + room for re-tokenization of the text prompt
    threads = str(hardware.threads)
    flash = str(get_engine("llama_cpp").flash_attention(artifact, hardware) == "enabled")
    launch = ["-m", "llama_cpp.server"] if weight_repacking() else ["-c", NO_REPACK_LAUNCHER]
    cmd = [
        sys.executable,
        *launch,
        "--model",
        str(served.gguf),
        "--model_alias",
        served.alias,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_batch",
        str(min(n_ctx, 512)),
        "--n_threads",
        threads,
        "--n_threads_batch",
        threads,
        "--n_gpu_layers",
        str(hardware.n_gpu_layers),
        "--seed",
        "0",
        "--interrupt_requests",
        "False",
        "--verbose",
        "False",
        "--cache",
        "False",  # no prompt cache (its default too, stated): a request never reuses another's prefix
        "--flash_attn",
        flash,
        "--yarn_attn_factor",
        "-1",
        "--yarn_beta_fast",
        "-1",
        "--yarn_beta_slow",
        "-1",
    ]
    if any((model.path / f).exists() for f in ("tokenizer.json", "tokenizer.model")):
        cmd += ["--hf_pretrained_model_name_or_path", str(model.path)]
    return served.spec(
        "llama.cpp",
        cmd,
        "/v1/models",
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        extra_body={"min_tokens": bench_cfg.gen_tokens},
        version=dist_versions("llama-cpp-python"),
        settings={
            "slots": "1",
            "continuous_batching": "off",
            "kv_cache_tokens": str(n_ctx),
            "flash_attn": flash,
            "threads": threads,
        },
    )  # min = max: EOS cannot end a request early
