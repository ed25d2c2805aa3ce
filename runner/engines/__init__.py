"""Engine registry: how an artifact is loaded and run, and which server deploys it under load.

Lazy by name: an engine's module (and its library) is imported only when that engine is asked for,
so a process that runs llama.cpp never imports torch (the benchmark worker's memory is the engine's).
Which formats an engine runs is its families' rows (runner/config/formats.py FAMILIES, `engines`).

To add an engine: its module here (an Engine subclass: load() returning a LoadedModel, version(), and
check_format(), check_available(), check_artifact(), kernel() where the defaults do not fit), its row
in ENGINES (with the server module in runner/benchmark/servers/ that deploys it, if one does), and its
name in the `engines` of each family row it runs.
"""

import importlib
from dataclasses import dataclass
from typing import Dict, Optional

from runner.engines.base import Engine
from runner.errors import UserError


@dataclass(frozen=True)
class EngineRow:
    implementation: str  # "module:class" of its Engine
    server: Optional[str] = None  # the runner/benchmark/servers module behind benchmark.kind=serving; None: no server


ENGINES: Dict[str, EngineRow] = {
    "torch": EngineRow("runner.engines.torch_engine:TorchEngine", "runner.benchmark.servers.transformers_server"),
    "llama_cpp": EngineRow("runner.engines.llama_cpp:LlamaCppEngine", "runner.benchmark.servers.llama_cpp_server"),
    # CUDA only; imports its library on load. Its usual server, TabbyAPI, is not a pip package
    "exllamav2": EngineRow("runner.engines.exllamav2:ExLlamaV2Engine"),
    # in .venv-vllm (a subprocess); `vllm serve` under load
    "vllm": EngineRow("runner.engines.vllm:VllmEngine", "runner.benchmark.servers.vllm_server"),
    # OpenVINO CPU runtime in .venv-openvino (a subprocess)
    "openvino": EngineRow("runner.engines.openvino:OpenvinoEngine"),
}
_instances: Dict[str, Engine] = {}


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise UserError("format.engine", f"unknown engine '{name}'", f"use one of {sorted(ENGINES)}")
    if name not in _instances:
        module, cls = ENGINES[name].implementation.split(":")
        _instances[name] = getattr(importlib.import_module(module), cls)()
    return _instances[name]
