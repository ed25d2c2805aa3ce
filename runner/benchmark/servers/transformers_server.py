"""`transformers serve` (transformers >= 5): the torch engine's artifacts (any folder from_pretrained loads).

Started with the artifact folder as its one preloaded model, offline (HF_HUB_OFFLINE=1), on
hardware.device with torch threads = hardware.threads. Without --continuous-batching it generates
for one request at a time. EOS is suppressed through a per-request generation_config with
min_new_tokens = max_new_tokens.
"""

import json
import sys

from runner.benchmark.servers.process import ServerSpec, require_modules
from runner.errors import UserError

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
    cmd = [
        sys.executable,
        "-c",
        "import sys; from transformers.cli.transformers import main; sys.exit(main())",
        "serve",
        str(artifact.path),
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        hardware.device,
        "--dtype",
        "auto",
        "--log-level",
        "warning",
    ]
    if model.trust_remote_code:
        cmd.append("--trust-remote-code")
    n = bench_cfg.gen_tokens
    gen = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
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
    )
