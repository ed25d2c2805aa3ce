"""EXL2 served by ExLlamaV2's dynamic generator (continuous batching over a paged KV cache) behind an OpenAI-compatible
streaming /v1/completions: runner/engines/workers/exl2_server.py, run by this venv's python (exllamav2 is installed
here on a CUDA machine) without importing the runner.

Slots: one per sequence the load admits (runner/benchmark/capacity.py: the concurrency, or the capacity search's
max_users), the generator's max_batch_size; more requests queue inside the server. Cache: slots x context per slot,
where context per slot is one request (prompt + output + a margin for the prompt re-tokenized from its text) rounded
up to ExLlamaV2's 256-token page -- what the load can hold at once, not the model's max_seq_len. Weights: split evenly
over the profile's n_gpus cards (runner/engines/exllamav2.py, gpu_split_gib). Prompts go as the base model's token ids
(an EXL2 folder keeps the model's tokenizer, but ids leave no room for a second tokenization to differ); requests ask
for exactly gen_tokens greedy tokens (ignore_eos + min_tokens) and the usage chunk counts them.
"""

import sys

from runner.benchmark.capacity import admitted_sequences
from runner.benchmark.servers.process import ServerSpec
from runner.engines.exllamav2 import SERVER_SCRIPT, ExLlamaV2Engine, profile_split, round_to_page
from runner.errors import UserError
from runner.system.packages import dist_versions

RETOKENIZE_MARGIN = 64  # the prompt text re-tokenized by the base model's tokenizer may come out a little longer


def context_per_slot(bench_cfg) -> int:
    """Tokens one sequence may hold: prompt + output + margin, rounded up to a cache page."""
    return round_to_page(int(bench_cfg.prompt_tokens) + int(bench_cfg.gen_tokens) + RETOKENIZE_MARGIN)


def build_cmd(artifact_path, served_name: str, bench_cfg, hardware, host: str, port: int) -> list:
    return [
        sys.executable,
        str(SERVER_SCRIPT),
        "--model",
        str(artifact_path),
        "--host",
        host,
        "--port",
        str(port),
        "--slots",
        str(admitted_sequences(bench_cfg)),
        "--context-per-slot",
        str(context_per_slot(bench_cfg)),
        "--gpu-split",
        ",".join(f"{x:g}" for x in profile_split(artifact_path, hardware)),
        "--served-name",
        served_name,
    ]


def spec(artifact, model, bench_cfg, hardware, host: str, port: int) -> ServerSpec:
    try:
        ExLlamaV2Engine().check_available(hardware)
    except UserError as e:  # the server was chosen by format.server (or its default rule), not format.engine
        raise UserError("format.server", e.problem, e.fix) from e
    name = artifact.manifest["format"]
    cmd = build_cmd(artifact.path, name, bench_cfg, hardware, host, port)
    arg = dict(zip(cmd[2::2], cmd[3::2]))
    slots, per_slot = int(arg["--slots"]), int(arg["--context-per-slot"])
    return ServerSpec(
        name="ExLlamaV2 dynamic generator",
        cmd=cmd,
        host=host,
        port=port,
        health_path="/health",
        model=name,
        extra_body={
            "ignore_eos": True,
            "min_tokens": bench_cfg.gen_tokens,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
        },
        prompt_ids=True,
        version=dist_versions("exllamav2"),
        settings={
            "slots": str(slots),
            "ctx_per_slot": str(per_slot),
            "kv_cache_tokens": str(slots * per_slot),
            "kv_cache_dtype": "fp16 (ExLlamaV2Cache)",
            "gpu_split_gib": arg["--gpu-split"],
            "continuous_batching": "on (ExLlamaV2DynamicGenerator, paged)",
            "prefix_caching": "page dedup of identical 256-token prefixes (the load's prompts share none)",
        },
    )
