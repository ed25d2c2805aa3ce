"""Engine registry: how an artifact is loaded and run."""
from typing import Dict

from runner.engines.base import Engine
from runner.engines.exllamav2 import ExLlamaV2Engine
from runner.engines.llama_cpp import LlamaCppEngine
from runner.engines.torch_engine import TorchEngine
from runner.engines.vllm import VllmEngine
from runner.errors import UserError

ENGINES: Dict[str, Engine] = {e.NAME: e for e in (TorchEngine(), LlamaCppEngine())}
ENGINES.update({e.NAME: e for e in (ExLlamaV2Engine(), VllmEngine())})  # CUDA only; they import their library on load


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise UserError("format.engine", f"unknown engine '{name}'", f"use one of {sorted(ENGINES)}")
    return ENGINES[name]
