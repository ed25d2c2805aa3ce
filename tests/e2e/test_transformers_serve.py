"""`transformers serve` for a weight-only artifact on CPU: it computes in the dtype evaluate used, and batches.

The server itself says which dtype its model holds (the launcher's "qrun: loaded" line, runner/benchmark/servers/
transformers_server.py) and whether each request ran under continuous batching (its own "CB:" log line); the
overlap of generations is read from the requests' own times."""

import csv
import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from helpers import ROOT
from runner.benchmark.serving import server_tags, serving_benchmark
from runner.cache import Cache
from runner.config.schema import register_configs
from runner.data.models import resolve_model
from runner.engines import get_engine
from runner.formats.artifacts import quantize
from runner.quality.stream import token_stream

pytestmark = pytest.mark.quantlib
register_configs()


def test_weight_only_format_is_served_in_its_evaluate_dtype_with_overlapping_generations(
    tiny_model_dir, cache_dir, tmp_path
):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "model=hf",
                f"model.id={tiny_model_dir}",
                "format=int8",
                "format.backend=llmcompressor",  # W8A16 compressed-tensors: stored with fp16 tensors, computed in fp32
                "eval.n_tokens=1024",
                "benchmark=serving",
                "benchmark.prompt_tokens=32",
                "benchmark.gen_tokens=48",
                "benchmark.requests=8",
                "benchmark.concurrency=4",
            ],
        )
    cache = Cache(cache_dir)
    model = resolve_model(cfg.model, cache)
    artifact = quantize(model, cfg.format, cfg.calibration, cfg.hardware, cache)
    loaded = get_engine("torch").load(artifact, model, cfg.hardware)  # what evaluate and the offline benchmark run
    evaluate_dtype = loaded.model.dtype
    loaded.close()
    assert evaluate_dtype == torch.float32
    assert json.loads((artifact.path / "config.json").read_text())["dtype"] == "float16"  # `--dtype auto` would be this

    m = serving_benchmark(artifact, model, cfg.benchmark, stream_of(model, cfg, cache), cfg.hardware, "transformers",
                          out_dir=tmp_path)  # fmt: skip
    # every request ends ok; the tokens each got are what the server's usage reports (transformers 5.17's CB streaming
    # was seen to end one request of 8 after 1 token: counted as such, never as 48)
    assert m["serving/requests_ok"] == 8 and m["serving/output_tokens"] <= 8 * 48
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert f"dtype={evaluate_dtype} device=cpu" in log, log[-2000:]
    assert "CB: True" in log and "CB: False" not in log
    assert server_tags(tmp_path)["serving.server.dtype"] == str(evaluate_dtype).removeprefix("torch.")
    with open(tmp_path / "requests.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    # a request's first token came while another, sent earlier, was still generating: their generations overlapped
    # (one request at a time, a queued request's first token only comes after the one before it has ended)
    spans = [(float(r["sent_s"]), float(r["sent_s"]) + float(r["ttft_s"]), float(r["sent_s"]) + float(r["latency_s"]))
             for r in rows]  # fmt: skip
    assert any(a[0] <= b[0] and a is not b and b[1] < a[2] - 0.01 for a in spans for b in spans), spans


def stream_of(model, cfg, cache):
    return token_stream(model, cfg.eval, cache)
