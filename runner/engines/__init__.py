"""Engine registry: how an artifact is loaded and run.

Lazy by name: an engine's module (and its library) is imported only when that engine is asked for,
so a process that runs llama.cpp never imports torch (the benchmark worker's memory is the engine's).
"""
import importlib
from typing import Dict

from runner.engines.base import Engine
from runner.errors import UserError

ENGINES: Dict[str, str] = {  # name -> "module:class"
    "torch": "runner.engines.torch_engine:TorchEngine",
    "llama_cpp": "runner.engines.llama_cpp:LlamaCppEngine",
    "exllamav2": "runner.engines.exllamav2:ExLlamaV2Engine",  # CUDA only; imports its library on load
    "vllm": "runner.engines.vllm:VllmEngine",  # CUDA only; imports its library on load
    "openvino": "runner.engines.openvino:OpenvinoEngine",  # OpenVINO CPU runtime in .venv-openvino (a subprocess)
}
_instances: Dict[str, Engine] = {}


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise UserError("format.engine", f"unknown engine '{name}'", f"use one of {sorted(ENGINES)}")
    if name not in _instances:
        module, cls = ENGINES[name].split(":")
        _instances[name] = getattr(importlib.import_module(module), cls)()
    return _instances[name]
