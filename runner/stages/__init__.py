"""The stages of a job, in pipeline order, and their one signature: run(StageContext) -> StageResult.

A stage reads what it needs from the context (config, model, cache, engine, the artifact once
quantize made it, the eval token stream and the eval baseline's artifact, each built on first use)
and returns what to log; runner/job.py runs the configured stages in order and logs every result the
same way. Each stage's module is imported only when it runs: this package must stay light (the
resume path and the benchmark worker import it, neither may pull in torch or transformers).

To add a stage: write runner/stages/<name>.py with `run(ctx) -> StageResult`, add its row to STAGES
(what it reads and its config check, so the job key and the checks follow without naming it), declare
every metric it logs in runner/metrics.py, and add its name to the `stages` lists that should run it.
"""

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from omegaconf import DictConfig

from runner.cache import Cache
from runner.config import baseline as baseline_rule
from runner.config import checks, model_config
from runner.errors import UserError

if TYPE_CHECKING:  # for the types only: this package stays light
    from runner.data.models import ModelSource
    from runner.engines.base import Engine
    from runner.formats.artifacts import Artifact


@dataclass
class StageContext:
    cfg: DictConfig  # the job's resolved config
    model: "ModelSource"
    cache: Cache
    run_dir: Path
    engine: "Engine"  # the job's (format.engine), never the cached artifact's first user's
    artifact: Optional["Artifact"] = None  # set by the quantize stage
    _stream: Any = field(default=None, repr=False)
    _baseline: Optional[Tuple[DictConfig, "Artifact"]] = field(default=None, repr=False)
    _baseline_plan: Optional[baseline_rule.Baseline] = field(default=None, repr=False)

    @property
    def stream(self):
        """The eval corpus as token ids, shared by evaluate and benchmark: built once per job."""
        if self._stream is None:
            from runner.quality.stream import token_stream

            self._stream = token_stream(self.model, self.cfg.eval, self.cache)
        return self._stream

    @property
    def baseline_plan(self) -> baseline_rule.Baseline:
        """eval.baseline resolved for this model and hardware profile (runner/config/baseline.py): which preset,
        in which dtype, where, and why. Raises UserError for a baseline that cannot fit the profile's GPUs."""
        if self._baseline_plan is None:
            from runner.formats import load_format_preset

            requested, preset_dtype, engine = self.cfg.eval.baseline, None, "torch"
            if requested != baseline_rule.AUTO:
                preset = load_format_preset(requested, "eval.baseline")
                preset_dtype, engine = preset.dtype if preset.family == "torch_dtype" else None, preset.engine
            config = model_config.read(self.model.path)
            self._baseline_plan = baseline_rule.resolve(
                requested, preset_dtype, config, self.model.n_params, self.cfg.hardware, engine
            )
        return self._baseline_plan

    @property
    def baseline(self) -> Tuple[DictConfig, "Artifact"]:
        """(config, artifact) of the resolved eval.baseline preset: what KLD and the tasks' retained share compare
        to."""
        if self._baseline is None:
            from runner.formats import load_format_preset
            from runner.formats.artifacts import quantize

            baseline_cfg = load_format_preset(self.baseline_plan.preset, "eval.baseline")
            self._baseline = (
                baseline_cfg,
                quantize(self.model, baseline_cfg, self.cfg.calibration, self.cfg.hardware, self.cache),
            )
        return self._baseline


@dataclass
class StageResult:
    metrics: Dict[str, float] = field(default_factory=dict)
    params: Dict[str, Any] = field(default_factory=dict)
    tags: Dict[str, str] = field(default_factory=dict)
    files: List[Tuple[Path, Optional[str]]] = field(default_factory=list)  # (file, MLflow artifact folder)
    summary: Dict[str, Any] = field(default_factory=dict)  # merged into the run's results.json


StageFn = Callable[[StageContext], StageResult]


@dataclass(frozen=True)
class Stage:
    run: Union[str, StageFn]  # a module with run(ctx), imported when the stage runs, or the callable itself
    reads_stream: bool = False  # the eval token stream: eval.* is checked and the eval text is in the job key
    uses_baseline: Callable[[DictConfig], bool] = lambda cfg: False  # the eval.baseline preset's artifact
    check: Callable[[DictConfig], None] = lambda cfg: None  # raises UserError naming the key, before any work
    # distributions its results depend on besides the format's and the engine's: their versions are in the job key
    libraries: Callable[[DictConfig], Tuple[str, ...]] = lambda cfg: ()


def _check_bootstrap(cfg: DictConfig) -> None:
    checks.bootstrap_settings(cfg.eval)


def _check_tasks(cfg: DictConfig) -> None:
    if cfg.eval.get("tasks"):
        from runner.tasks.registry import check_tasks

        check_tasks(cfg.eval.tasks, cfg.eval.get("task_limit"))


def _check_benchmark(cfg: DictConfig) -> None:
    checks.check_benchmark(cfg.benchmark, cfg.eval)
    if cfg.benchmark.kind == "serving":  # the server that deploys the format can serve it (name and artifacts)
        from runner.benchmark.servers import resolve_server

        server = resolve_server(cfg)
        if cfg.benchmark.get("server") != server:
            raise UserError(
                "benchmark.server",
                f"'{cfg.benchmark.server}' set, but the server is derived (here: {server})",
                "remove the override; choose a server with format.server or deployment.servers.<format>",
            )


STAGES: Dict[str, Stage] = {
    "quantize": Stage("runner.stages.quantize"),
    "evaluate": Stage(
        "runner.stages.evaluate",
        reads_stream=True,
        uses_baseline=lambda cfg: True,
        check=_check_bootstrap,
    ),
    # lm-eval task accuracy (eval.tasks); nothing to do when that is empty
    "tasks": Stage(
        "runner.stages.tasks",
        uses_baseline=lambda cfg: bool(cfg.eval.get("tasks")),
        check=_check_tasks,
        libraries=lambda cfg: ("lm-eval",) if cfg.eval.get("tasks") else (),
    ),
    # the benchmark's prompts are cut from the eval stream
    "benchmark": Stage("runner.stages.benchmark", reads_stream=True, check=_check_benchmark),
    # opt-in: a GGUF dequantized on torch vs llama.cpp, scored against the baseline like evaluate
    "dequant_check": Stage(
        "runner.stages.dequant_check",
        reads_stream=True,
        uses_baseline=lambda cfg: True,
        check=_check_bootstrap,
    ),
}


def register(name: str, stage: Union[Stage, StageFn]) -> None:
    STAGES[name] = stage if isinstance(stage, Stage) else Stage(stage)


def unregister(name: str) -> None:
    STAGES.pop(name, None)


def plan(names) -> List[str]:
    """The stages to run, in the configured order; quantize first, as every other stage reads its artifact."""
    names = list(dict.fromkeys(names))
    unknown = [s for s in names if s not in STAGES]
    if unknown or "quantize" not in names:
        raise UserError(
            "stages",
            f"unknown or missing stages {unknown or ['quantize']}",
            f"use a list drawn from [{','.join(STAGES)}] that includes quantize",
        )
    return ["quantize"] + [s for s in names if s != "quantize"]


def reads_stream(cfg: DictConfig) -> bool:
    return any(STAGES[s].reads_stream for s in cfg.stages if s in STAGES)


def uses_baseline(cfg: DictConfig) -> bool:
    return any(STAGES[s].uses_baseline(cfg) for s in cfg.stages if s in STAGES)


def libraries(cfg: DictConfig) -> List[str]:
    """The distributions the job's stages depend on beyond its format and engine (e.g. lm-eval for tasks)."""
    return sorted({d for s in cfg.stages if s in STAGES for d in STAGES[s].libraries(cfg)})


def check_config(cfg: DictConfig) -> None:
    """Raise a UserError naming the first key whose value cannot work, for the stages this job runs."""
    check_values(cfg)
    check_engine(cfg)


def check_values(cfg: DictConfig) -> None:
    """The config's values, for the stages this job runs."""
    checks.check_hardware(cfg.hardware)
    checks.check_cache(cfg.cache)
    checks.check_calibration(cfg.calibration)
    if reads_stream(cfg):
        checks.check_eval(cfg.eval, cfg.hardware.device)
    for name in plan(cfg.stages):
        STAGES[name].check(cfg)


def check_engine(cfg: DictConfig) -> None:
    """Does format.engine run this format, with these settings (answered without the engine's library)?"""
    from runner.engines import check_runs, get_engine

    check_runs(cfg.format)
    get_engine(cfg.format.engine).check_format(cfg.format, cfg.hardware)


def run_stage(name: str, ctx: StageContext) -> StageResult:
    run = STAGES[name].run
    if isinstance(run, str):
        run = importlib.import_module(run).run
    return run(ctx)
