"""Engine registry: how an artifact is loaded and run (the server that deploys a format under load is chosen in
runner/benchmark/servers, SERVERS).

Lazy by name: an engine's module (and its library) is imported only when that engine is asked for,
so a process that runs llama.cpp never imports torch (the benchmark worker's memory is the engine's).
An engine runs the families whose own engine it is (their schema's `engine` default) and those its row
lists in `also_runs`; any other format.engine is refused before any work (check_runs).

To add an engine: its module here (an Engine subclass: load() returning a LoadedModel, version(), and
check_format(), check_available(), check_artifact(), kernel() where the defaults do not fit) and its row
in ENGINES: the existing families it also runs.
"""

from dataclasses import dataclass
from typing import Dict, Tuple

from runner.config.formats import FAMILIES
from runner.engines.base import Engine
from runner.errors import UserError
from runner.system.registry import LazyInstances


@dataclass(frozen=True)
class EngineRow:
    implementation: str  # "module:class" of its Engine
    also_runs: Tuple[str, ...] = ()  # families beyond those whose own engine it is


ENGINES: Dict[str, EngineRow] = {
    # a GGUF's weights dequantized by transformers (the llama.cpp job's file)
    "torch": EngineRow("runner.engines.torch_engine:TorchEngine", also_runs=("gguf",)),
    "llama_cpp": EngineRow("runner.engines.llama_cpp:LlamaCppEngine"),
    # CUDA only; imports its library on load
    "exllamav2": EngineRow("runner.engines.exllamav2:ExLlamaV2Engine", also_runs=("torch_dtype",)),
    # in .venv-vllm (a subprocess)
    # dense HF folders, GPTQ v1 (gptqmodel), compressed-tensors (llm-compressor; its INT8 W8A16 on CUDA), AutoAWQ GEMM
    "vllm": EngineRow("runner.engines.vllm:VllmEngine", also_runs=("torch_dtype", "gptq", "awq", "int8")),
    # OpenVINO CPU runtime in .venv-openvino (a subprocess)
    "openvino": EngineRow("runner.engines.openvino:OpenvinoEngine"),
}
_instances: LazyInstances[Engine] = LazyInstances(ENGINES, "format.engine", "engine")


def get_engine(name: str) -> Engine:
    return _instances.get(name)


def engines_for(family: str) -> Tuple[str, ...]:
    """The engines that run `family`'s artifacts: its own first."""
    own = FAMILIES[family].schema.engine
    return (own,) + tuple(name for name, row in ENGINES.items() if family in row.also_runs and name != own)


def families_on(engine: str) -> Tuple[str, ...]:
    return tuple(family for family in FAMILIES if engine in engines_for(family))


def check_runs(fmt) -> None:
    """UserError naming format.engine when that engine does not run the format's family."""
    if fmt.family in FAMILIES and fmt.engine in ENGINES and fmt.engine not in engines_for(fmt.family):
        raise UserError("format.engine", f"{fmt.engine} does not run the {fmt.family} format ({fmt.name})",
                        f"use format.engine={' or '.join(engines_for(fmt.family))}")  # fmt: skip
