"""The stages of a job and their one signature: run(StageContext) -> StageResult.

A stage reads what it needs from the context (config, model, cache, engine, the artifact once
quantize made it, the eval token stream built on first use) and returns what to log; runner/job.py
runs the configured stages in order and logs every result the same way. Each stage's module is
imported only when it runs: this package must stay light (the resume path and the benchmark worker
import it, neither may pull in torch or transformers).
"""
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from runner.errors import UserError


@dataclass
class StageContext:
    cfg: Any  # the job's resolved DictConfig
    model: Any  # runner.data.models.ModelSource
    cache: Any  # runner.cache.Cache
    run_dir: Path
    engine: Any  # the job's engine (format.engine), never the cached artifact's first user's
    artifact: Any = None  # runner.stages.quantize.Artifact, set by the quantize stage
    _stream: Any = field(default=None, repr=False)

    @property
    def stream(self):
        """The eval corpus as token ids, shared by evaluate and benchmark: built once per job."""
        if self._stream is None:
            from runner.stages.stream import token_stream

            self._stream = token_stream(self.model, self.cfg.eval, self.cache)
        return self._stream


@dataclass
class StageResult:
    metrics: Dict[str, float] = field(default_factory=dict)
    params: Dict[str, Any] = field(default_factory=dict)
    tags: Dict[str, str] = field(default_factory=dict)
    files: List[Tuple[Path, Optional[str]]] = field(default_factory=list)  # (file, MLflow artifact folder)
    summary: Dict[str, Any] = field(default_factory=dict)  # merged into the run's results.json


Stage = Callable[[StageContext], StageResult]
# name -> module with run(ctx), imported when the stage runs; register() adds callables (plugins, tests)
STAGES: Dict[str, Any] = {"quantize": "runner.stages.quantize", "evaluate": "runner.stages.evaluate",
                          "benchmark": "runner.stages.benchmark"}
STAGES["tasks"] = "runner.tasks.stage"  # lm-eval task accuracy (eval.tasks); nothing to do when that is empty
STAGES["dequant_check"] = "runner.stages.dequant_check"  # opt-in: GGUF dequantized on torch vs llama.cpp


def register(name: str, stage: Stage) -> None:
    STAGES[name] = stage


def unregister(name: str) -> None:
    STAGES.pop(name, None)


def plan(names) -> List[str]:
    """The stages to run, in the configured order; quantize first, as every other stage reads its artifact."""
    names = list(dict.fromkeys(names))
    unknown = [s for s in names if s not in STAGES]
    if unknown or "quantize" not in names:
        raise UserError("stages", f"unknown or missing stages {unknown or ['quantize']}",
                        f"use a list drawn from [{','.join(STAGES)}] that includes quantize")
    return ["quantize"] + [s for s in names if s != "quantize"]


def run_stage(name: str, ctx: StageContext) -> StageResult:
    stage = STAGES[name]
    if isinstance(stage, str):
        stage = importlib.import_module(stage).run
    return stage(ctx)
