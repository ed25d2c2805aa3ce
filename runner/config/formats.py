"""The format families: each one's config schema (whose `engine` default is the family's own engine) and implementation.

Hydra validates conf/format/*.yaml against these schemas at composition time (`qrun --cfg job`,
config tests, resumed jobs), so this module must stay light: plain dataclasses, no library imports.
The implementations (runner/formats/<family>.py) are imported by name only when a job uses them
(runner.formats.get_format).

Which engines run a family: its own, and every engine whose row in runner/engines/__init__.py ENGINES
lists it in `also_runs` (runner.engines.engines_for).

To add a format family: its schema here (a FormatConfig subclass whose `family` default is the
family's name and `engine` default its own engine), its row in FAMILIES, its module in runner/formats/
(a Format subclass: quantize(), and validate(), library_versions(), uses_calibration() where the
defaults do not fit), and its presets as conf/format/<name>.yaml, each starting from
`- /schema/format/<family>@_here_`.
"""

from dataclasses import dataclass
from typing import Dict, Optional

from omegaconf import MISSING

# Each YAML under conf/format/ starts from its family's schema: `- /schema/format/<family>@_here_`.
SCHEMA_GROUP = "schema/format"


@dataclass
class FormatConfig:
    name: str = MISSING  # equals the YAML file name; logged as the param format.name
    family: str = MISSING  # which runner/formats module handles it
    engine: str = "torch"  # which runner/engines module loads the artifact
    # the server this format deploys with under benchmark=serving (runner/benchmark/servers SERVERS); null: the
    # default rule there (GGUF: llama_server; what vLLM loads: vllm; other folders: transformers)
    server: Optional[str] = None


@dataclass
class TorchDtypeConfig(FormatConfig):
    family: str = "torch_dtype"
    dtype: str = "float32"


@dataclass
class GgufConfig(FormatConfig):
    family: str = "gguf"
    engine: str = "llama_cpp"
    quant_type: str = "q4_k_m"
    imatrix: bool = False  # importance matrix from the calibration text (cached per model + calibration)


@dataclass
class Exl2Config(FormatConfig):
    family: str = "exl2"
    engine: str = "exllamav2"
    bpw: float = 4.0  # -b: target average bits per weight of the decoder layers (2.0 .. 8.0)
    head_bits: int = 6  # -hb: bits of the output head, one of 2 3 4 5 6 8


@dataclass
class GptqConfig(FormatConfig):
    family: str = "gptq"
    backend: str = "gptqmodel"  # gptqmodel | llmcompressor
    bits: int = 4
    # null: from the model (runner/formats/group_size.py: 128 where every input width allows it); -1: one per row
    group_size: Optional[int] = None
    desc_act: bool = False  # act-order: quantize columns by decreasing Hessian diagonal
    damp_percent: float = 0.01
    sym: bool = False
    true_sequential: bool = True  # gptqmodel: quantize q/k/v, then o, then mlp within a layer


@dataclass
class AwqConfig(FormatConfig):
    family: str = "awq"
    backend: str = "llmcompressor"  # llmcompressor | gptqmodel | autoawq
    w_bit: int = 4
    q_group_size: Optional[int] = None  # null: from the model (runner/formats/group_size.py), as gptq's group_size
    zero_point: bool = True  # asymmetric
    version: str = "GEMM"  # AutoAWQ kernel layout (gptqmodel, autoawq); llmcompressor writes compressed-tensors
    # llmcompressor's scale search (gptqmodel and autoawq search a fixed 20-point grid):
    n_grid: int = 20  # grid points per mapping, each a forward of the mapping's parent module over the calibration
    duo_scaling: bool = True  # scales from activations and weights (AWQ paper); false: activations only


@dataclass
class Int8Config(FormatConfig):
    family: str = "int8"
    backend: str = "torchao"  # torchao | bitsandbytes | llmcompressor
    llm_int8_threshold: float = 6.0  # bitsandbytes: outlier threshold (activations above stay in fp)


@dataclass
class Nf4Config(FormatConfig):
    family: str = "nf4"
    backend: str = "bitsandbytes"
    quant_type: str = "nf4"  # nf4 | fp4
    double_quant: bool = False  # also quantize the per-block scales (saves ~0.4 bpw)


@dataclass
class TorchaoConfig(FormatConfig):
    family: str = "torchao"
    backend: str = "torchao"
    scheme: str = "w8a8_dynamic"  # int8 weights per row + int8 activations per token at run time (torch._int_mm)


@dataclass
class AutoRoundConfig(FormatConfig):
    family: str = "autoround"
    backend: str = "auto_round"
    bits: int = 4
    group_size: Optional[int] = None  # null: from the model (runner/formats/group_size.py); -1: one group per row
    sym: bool = True
    iters: int = 200  # SignRound steps per decoder block (AutoRound's default; each a forward + backward of the block)
    batch_size: int = 8  # calibration samples per step (capped at calibration.n_samples)
    lr: Optional[float] = None  # null: AutoRound's 1/iters


@dataclass
class OpenvinoConfig(FormatConfig):
    family: str = "openvino"
    engine: str = "openvino"
    bits: int = 8  # NNCF data-free weight compression: 8 (per output channel) or 4 (groups)
    sym: bool = False  # false: a zero point per channel/group
    group_size: int = -1  # -1: per output channel (INT8); INT4: must divide every compressed row (hidden, intermediate)
    ratio: float = 1.0  # INT4: share of the compressible layers in INT4, the rest INT8
    all_layers: bool = False  # INT4: the embedding and lm_head too (false: they stay INT8, NNCF's default)
    inference_precision: str = (
        "f32"  # OpenVINO's INFERENCE_PRECISION_HINT at run time; "": its default (bf16 on AVX512-BF16/AMX)
    )
    # OpenVINO's DYNAMIC_QUANTIZATION_GROUP_SIZE at run time: 0 = activations stay float; null = its CPU default, which
    # quantizes activations to int8 in groups for compressed-weight matmuls (faster, and adds its own error)
    dynamic_quantization_group_size: Optional[int] = 0


@dataclass(frozen=True)
class Family:
    schema: type  # the dataclass its presets are validated against; its `engine` default is the family's own engine
    implementation: str  # "module:class" of its Format, imported when a job uses the family


FAMILIES: Dict[str, Family] = {
    "torch_dtype": Family(TorchDtypeConfig, "runner.formats.torch_dtype:TorchDtypeFormat"),
    "gguf": Family(GgufConfig, "runner.formats.gguf.format:GgufFormat"),
    "exl2": Family(Exl2Config, "runner.formats.exl2:Exl2Format"),  # CUDA only
    # weight-only INT4 / INT8 (calibrated or not)
    "gptq": Family(GptqConfig, "runner.formats.gptq:GptqFormat"),
    "awq": Family(AwqConfig, "runner.formats.awq:AwqFormat"),
    "int8": Family(Int8Config, "runner.formats.int8:Int8Format"),
    "nf4": Family(Nf4Config, "runner.formats.nf4:Nf4Format"),
    # torchao schemes with CPU kernels (W8A8 dynamic)
    "torchao": Family(TorchaoConfig, "runner.formats.torchao_schemes:TorchaoFormat"),
    # auto-round SignRound, GPTQ v1 checkpoint
    "autoround": Family(AutoRoundConfig, "runner.formats.autoround:AutoRoundFormat"),
    # OpenVINO IR + NNCF INT8/INT4, exported in .venv-openvino
    "openvino": Family(OpenvinoConfig, "runner.formats.openvino:OpenvinoFormat"),
}
