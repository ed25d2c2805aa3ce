"""`transformers serve` (transformers >= 5): the torch engine's artifacts (any folder from_pretrained loads).

Started with the artifact folder as its one preloaded model, offline (HF_HUB_OFFLINE=1), on
hardware.device with torch threads = hardware.threads, in the dtype the torch engine computes the artifact in for
evaluate and the offline benchmark (runner.engines.torch_engine.compute_dtype: fp32 for the weight-only folders on
CPU), with --continuous-batching (paged attention: concurrent requests share each forward; without it the server
generates for one request at a time). Its paged KV cache is sized to admit every sequence the load (or the capacity
search) can have in flight: runner.benchmark.capacity.admitted_sequences x (prompt + output + 64) tokens, and a batch
holds one prompt's prefill plus a decode token per sequence. CB takes one generation config for all requests and
drops the logits processors it cannot batch (min_new_tokens among them), so EOS is suppressed with eos_token_id=-1
(which CB passes per request) on top of min_new_tokens = max_new_tokens. CB's block sharing (its prefix cache) cannot
be turned off from the CLI; the benchmark's prompts are distinct windows that share no full block.
"""

import json
import math
import sys

from runner.benchmark.capacity import admitted_sequences
from runner.benchmark.servers.process import ServerSpec, require_modules
from runner.engines.torch_engine import compute_dtype
from runner.errors import UserError
from runner.system.packages import dist_versions

# `transformers serve` with one line more in its log: the loaded model's class, dtype and device, as the server holds
# them (the CLI logs neither); each request's log line already says whether it ran under continuous batching ("CB:")
LAUNCHER = (
    "import sys\n"
    "from transformers.cli.serving import model_manager\n"
    "_load = model_manager.ModelManager._load_model\n"
    "def _load_and_say(self, *args, **kwargs):\n"
    "    model = _load(self, *args, **kwargs)\n"
    "    print(f'qrun: loaded {type(model).__name__} dtype={model.dtype} device={model.device}', flush=True)\n"
    "    return model\n"
    "model_manager.ModelManager._load_model = _load_and_say\n"
    "from transformers.cli.transformers import main\n"
    "sys.exit(main())\n"
)
CB_BLOCK_TOKENS = 32  # paged KV block; small so that short sequences waste little of the cache

NEEDS = ("fastapi", "uvicorn", "openai", "pydantic")


def check_available() -> None:
    require_modules(NEEDS, "`transformers serve`")


def spec(artifact, model, bench_cfg, hardware, host: str, port: int) -> ServerSpec:
    check_available()
    if not any((artifact.path / f).exists() for f in ("tokenizer.json", "tokenizer.model")):
        raise UserError(
            "benchmark.kind",
            f"the artifact folder {artifact.path} has no tokenizer, which `transformers serve` needs",
            "re-run the quantize stage with a format that copies the tokenizer (cache.mode=off)",
        )
    dtype = compute_dtype(artifact.manifest, hardware.device)
    seqs = admitted_sequences(bench_cfg)
    max_len = bench_cfg.prompt_tokens + bench_cfg.gen_tokens + 64  # + room for re-tokenization of the text prompt
    blocks = seqs * math.ceil(max_len / CB_BLOCK_TOKENS)
    batch_tokens = max_len + seqs
    cmd = [
        sys.executable,
        "-c",
        LAUNCHER,
        "serve",
        str(artifact.path),
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        hardware.device,
        "--dtype",
        dtype,
        "--continuous-batching",
        "--cb-block-size",
        str(CB_BLOCK_TOKENS),
        "--cb-num-blocks",
        str(blocks),
        "--cb-max-batch-tokens",
        str(batch_tokens),
        "--log-level",
        "warning",
    ]
    if model.trust_remote_code:
        cmd.append("--trust-remote-code")
    n = bench_cfg.gen_tokens
    gen = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "eos_token_id": -1}
    threads = str(hardware.threads)
    return ServerSpec(
        name="transformers serve",
        cmd=cmd,
        host=host,
        port=port,
        health_path="/health",
        model=str(artifact.path),
        extra_body={"generation_config": json.dumps(gen)},
        env={
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        },
        version=dist_versions("transformers", "torch"),
        settings={
            "dtype": dtype,
            "continuous_batching": "on",
            "sequences": str(seqs),
            "kv_cache_tokens": str(blocks * CB_BLOCK_TOKENS),
            "max_batch_tokens": str(batch_tokens),
        },
    )
