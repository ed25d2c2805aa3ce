"""What the serving peer checks (llama_server_ratio.py, vllm_serve_ratio.py) share: their command line, and the
artifact, model and distinct eval-stream prompts they load servers with, composed as `qrun` would."""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hydra import compose, initialize_config_dir  # noqa: E402

from runner.benchmark.serving import make_prompts  # noqa: E402
from runner.cache import Cache  # noqa: E402
from runner.config.schema import register_configs  # noqa: E402
from runner.data.models import resolve_model  # noqa: E402
from runner.formats.artifacts import quantize  # noqa: E402
from runner.quality.stream import token_stream  # noqa: E402


def arguments(doc: str, default_format: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", default=default_format)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--requests", type=int, default=8, help="requests per load (one load per users value per round)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--users", default="1,4")
    ap.add_argument("extra", nargs="*", help="qrun overrides, e.g. model=hf model.id=/my/model")
    return ap


def served(args, users, n_prompts: int):
    """(cfg, model, artifact, prompt texts, their lengths): the config a serving job with these settings composes,
    the artifact from the qrun cache (QRUN_CACHE_DIR; built there if missing) and n_prompts distinct prompts."""
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                f"format={args.format}",
                "benchmark=serving",
                f"benchmark.prompt_tokens={args.prompt}",
                f"benchmark.gen_tokens={args.gen}",
                f"benchmark.concurrency={max(users)}",
                f"hardware.threads={args.threads}",
                *args.extra,
            ],
        )
    cache = Cache(Path(os.environ.get("QRUN_CACHE_DIR", ROOT / ".qrun_cache")))
    model = resolve_model(cfg.model, cache)
    artifact = quantize(model, cfg.format, cfg.calibration, cfg.hardware, cache)  # cached: found, not rebuilt
    stream = token_stream(model, cfg.eval, cache)
    texts, lengths = make_prompts(stream, model.load_tokenizer(), n_prompts, args.prompt)
    return cfg, model, artifact, texts, lengths
