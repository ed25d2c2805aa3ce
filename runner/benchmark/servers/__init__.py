"""OpenAI-compatible servers for the serving benchmark: SERVERS (name -> module) and which one deploys a format.

A format deploys with `format.server` when its preset names one, else a scenario's `deployment.servers.<format>`
overrides it, else the default rule (`default_server`): GGUF on llama.cpp's own `llama-server`; EXL2 on ExLlamaV2's
dynamic generator (`exllamav2`, runner/engines/workers/exl2_server.py); folders vLLM can load (its engine's own refusal
rules, runner/engines/vllm.py: fp32/fp16/bf16, symmetric GPTQ, AWQ, compressed-tensors INT4/INT8 on CUDA) on vLLM; the
other torch folders on `transformers serve`. On a CUDA profile each takes its GPUs from the profile (vLLM: tensor x
data parallel; llama-server: every layer, split evenly over n_gpus; ExLlamaV2: an even weight split over n_gpus).
`benchmark.server` shows the result in the composed config (`qrun ... --cfg job --resolve`): the `deployed_server`
resolver (runner/config/schema.py) calls `configured_server` here.
The decision never falls back silently: a chosen server whose prerequisite is missing (e.g. no `.venv-vllm`) stops
the job with a one-line UserError naming format.server and the fix, since serving the format elsewhere would change
what the decision compares.
"""

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from runner.benchmark.servers.process import ServerProcess, ServerSpec, pick_port
from runner.config.checks import check_loopback
from runner.engines import families_on
from runner.errors import UserError


@dataclass(frozen=True)
class ServerRow:
    module: str  # the runner/benchmark/servers module with spec(...)
    serves: Tuple[str, ...]  # the engines whose artifacts it loads (their families: runner.engines.families_on)
    what: str  # one line for errors and docs


SERVERS: Dict[str, ServerRow] = {
    "llama_server": ServerRow("runner.benchmark.servers.llama_server", ("llama_cpp",), "llama.cpp's own llama-server"),
    "llama_cpp_python": ServerRow(
        "runner.benchmark.servers.llama_cpp_server", ("llama_cpp",), "llama-cpp-python's llama_cpp.server"
    ),
    "vllm": ServerRow("runner.benchmark.servers.vllm_server", ("vllm",), "vLLM's OpenAI server (.venv-vllm)"),
    "transformers": ServerRow(
        "runner.benchmark.servers.transformers_server", ("torch",), "`transformers serve --continuous-batching`"
    ),
    "exllamav2": ServerRow(
        "runner.benchmark.servers.exl2_server",
        ("exllamav2",),
        "ExLlamaV2's dynamic generator behind an OpenAI-compatible /v1/completions",
    ),
}
NO_SERVER_FAMILIES = ("openvino",)  # OpenVINO's model server is not run here


def _refusal(name: str, fmt, hardware) -> Optional[str]:
    """Why server `name` cannot serve this format on this hardware; None when it can."""
    row = SERVERS[name]
    families = {f for engine in row.serves for f in families_on(engine)}
    if fmt.family not in families:
        return f"{row.what} does not load {fmt.family} artifacts ({fmt.name})"
    if name == "transformers" and fmt.family == "gguf":
        return "`transformers serve` is not run on a GGUF file here (it would dequantize it)"
    if name == "vllm":
        from runner.engines.vllm import VllmEngine

        try:
            VllmEngine().check_format(fmt, hardware)
        except UserError as e:
            return f"vLLM cannot load it ({e.key}: {e.problem})"
    return None


def default_server(fmt, hardware) -> Optional[str]:
    """The server a format deploys with when nothing names one (None: no server in this runner)."""
    if fmt.family == "gguf":
        return "llama_server"
    if fmt.family == "exl2":
        return "exllamav2"
    if fmt.family in NO_SERVER_FAMILIES:
        return None
    for name in ("vllm", "transformers"):
        if _refusal(name, fmt, hardware) is None:
            return name
    return None


def server_key(cfg) -> str:
    """The config key that chose the job's server (for errors)."""
    d = cfg.get("deployment")
    if d is not None and d.get("servers") and fmt_name(cfg) in d.servers:
        return f"deployment.servers.{fmt_name(cfg)}"
    return "format.server"


def fmt_name(cfg) -> str:
    return str(cfg.format.name)


def resolve_server(cfg) -> str:
    """The server name this job's serving benchmark starts; UserError naming the key when it cannot serve the format."""
    key = server_key(cfg)
    d = cfg.get("deployment")
    if key.startswith("deployment."):
        name = d.servers[fmt_name(cfg)]
    else:
        name = cfg.format.get("server") or default_server(cfg.format, cfg.hardware)
    if name is None:
        raise UserError(
            "benchmark.kind",
            f"no OpenAI-compatible server for the {cfg.format.family} format ({fmt_name(cfg)}) in this runner "
            "(OpenVINO's model server is not run here)",
            "benchmark this model as GGUF or an HF folder, or use benchmark=default (offline)",
        )
    if name not in SERVERS:
        raise UserError(key, f"unknown server '{name}'", f"use one of {sorted(SERVERS)}")
    why = _refusal(name, cfg.format, cfg.hardware)
    if why:
        fits = [s for s in SERVERS if _refusal(s, cfg.format, cfg.hardware) is None]
        raise UserError(key, f"{name} cannot serve {fmt_name(cfg)}: {why}", f"use one of {fits} or leave it unset")
    return name


def configured_server(cfg) -> Optional[str]:
    """benchmark.server as the composed config shows it: the server the serving benchmark starts, None for an offline
    benchmark, or why none can ("refused: <key>: <problem>"), for the job's checks to stop it with the full line."""
    if cfg.benchmark.get("kind") != "serving":
        return None
    try:
        return resolve_server(cfg)
    except UserError as e:
        return f"refused: {e.key}: {e.problem}"


def server_spec(artifact, server: str, model, bench_cfg, hardware, port: int) -> ServerSpec:
    """Server `server` (a SERVERS name) running this artifact, bound to bench_cfg.host:port."""
    row = SERVERS[server]
    if importlib.util.find_spec(row.module) is None:
        raise UserError(
            "format.server",
            f"{row.what} ({server}) is not in this runner (no module {row.module})",
            "use format.server=llama_cpp_python for GGUF, or update the runner",
        )
    return importlib.import_module(row.module).spec(artifact, model, bench_cfg, hardware, bench_cfg.host, port)


__all__ = [
    "SERVERS",
    "ServerProcess",
    "configured_server",
    "ServerSpec",
    "check_loopback",
    "default_server",
    "pick_port",
    "resolve_server",
    "server_spec",
]
