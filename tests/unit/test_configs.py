"""Every option of every config group composes and validates against its schema (lightning-hydra-template style)."""

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from helpers import ROOT
from runner.config.formats import FAMILIES
from runner.config.schema import register_configs
from runner.engines import ENGINES, engines_for, families_on
from runner.formats import load_format_preset

CONF = ROOT / "conf"
GROUPS = ["model", "format", "calibration", "hardware", "eval", "benchmark", "tracking"]
register_configs()


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


def test_default_config_composes_and_resolves():
    cfg = _compose([])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg.format.name == "fp32" and cfg.model.source == "packaged_gguf"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(group, option):
    extra = ["model.id=/some/folder"] if (group, option) in (("model", "hf"), ("model", "gguf")) else []
    extra += ["calibration.corpus.path=/some/text.txt"] if (group, option) == ("calibration", "file") else []
    cfg = _compose([f"{group}={option}"] + extra)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if group != "model":
        assert cfg[group].name == option, f"conf/{group}/{option}.yaml must carry name: {option}"


@pytest.mark.parametrize("option", _options("format"))
def test_format_presets_have_registered_family(option):
    cfg = _compose([f"format={option}"])
    assert cfg.format.family in FAMILIES
    assert cfg.format.engine in engines_for(cfg.format.family), "a preset's engine must be one its family runs on"
    assert load_format_preset(option, "eval.baseline") == cfg.format


def test_typo_in_key_fails_naming_it():
    with pytest.raises(ConfigCompositionException, match="n_tokenz"):
        _compose(["eval.n_tokenz=10"])


def test_wrong_type_fails_naming_the_key():
    with pytest.raises(ConfigCompositionException, match="eval.n_tokens"):
        _compose(["eval.n_tokens=many"])


def test_format_schema_rejects_unknown_key():
    with pytest.raises(ConfigCompositionException, match="bits"):
        _compose(["format=fp16", "format.bits=4"])


def test_format_schema_rejects_wrong_type():
    with pytest.raises(ConfigCompositionException, match="group_size"):
        _compose(["format=gptq_int4", "format.group_size=many"])


def test_unknown_format_lists_options():
    with pytest.raises(ConfigCompositionException, match="fp16") as e:
        _compose(["format=nope"])
    listed = str(e.value).split("Available options in 'format':")[1].split("Config search path")[0].split()
    assert listed == _options("format")  # the presets only: the schemas they extend are not options


def test_the_engine_table_names_only_known_families_and_engines():
    assert all(set(row.also_runs) <= set(FAMILIES) for row in ENGINES.values())
    assert all(FAMILIES[f].schema.engine in ENGINES for f in FAMILIES)
    # what the table says, as fixed facts: vLLM's loaders, the torch engine's GGUF dequantization
    assert families_on("vllm") == ("torch_dtype", "gptq", "awq", "int8")  # INT8: compressed-tensors, on CUDA
    assert engines_for("gguf") == ("llama_cpp", "torch") and engines_for("openvino") == ("openvino",)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_format_schema_is_not_a_format_option(family):
    with pytest.raises(ConfigCompositionException):
        _compose([f"format={family}_schema"])


def test_cpu_profile_threads_follow_the_cores_this_process_may_use(tmp_path):
    """hardware=cpu never assumes a core count: pinned to one core, it asks for one thread."""
    qrun = [sys.executable, "-m", "runner", "--cfg", "job", "--resolve", "hardware=cpu"]
    pinned = subprocess.run(["taskset", "-c", "0", *qrun], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert pinned.returncode == 0, pinned.stderr[-2000:]
    assert "threads: 1\n" in pinned.stdout
    free = subprocess.run(
        qrun,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(CONF.parent)),
    )
    assert f"threads: {len(os.sched_getaffinity(0))}\n" in free.stdout
