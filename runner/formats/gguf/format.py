"""GGUF through llama.cpp: HF -> f16 GGUF once per model (llama.cpp's own converter, cached),
then each quant type is one llama_model_quantize call, optionally guided by an importance matrix.
"""

import ctypes
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from runner.cache import Cache
from runner.data.corpus import sdist_folder
from runner.errors import UserError
from runner.formats.base import Format, WeightBits
from runner.formats.gguf.files import check_gguf, tensor_report
from runner.system import packages
from runner.system.library_logs import route_llama_cpp_log

log = logging.getLogger(__name__)

# preset name -> llama_ftype suffix (llama_cpp.LLAMA_FTYPE_<suffix>)
QUANT_TYPES = {
    "f16": "MOSTLY_F16",
    "bf16": "MOSTLY_BF16",
    "q8_0": "MOSTLY_Q8_0",
    "q6_k": "MOSTLY_Q6_K",
    "q5_k_m": "MOSTLY_Q5_K_M",
    "q5_k_s": "MOSTLY_Q5_K_S",
    "q5_0": "MOSTLY_Q5_0",
    "q5_1": "MOSTLY_Q5_1",
    "q4_k_m": "MOSTLY_Q4_K_M",
    "q4_k_s": "MOSTLY_Q4_K_S",
    "q4_0": "MOSTLY_Q4_0",
    "q4_1": "MOSTLY_Q4_1",
    "q3_k_l": "MOSTLY_Q3_K_L",
    "q3_k_m": "MOSTLY_Q3_K_M",
    "q3_k_s": "MOSTLY_Q3_K_S",
    "q2_k": "MOSTLY_Q2_K",
    "iq4_nl": "MOSTLY_IQ4_NL",
    "iq4_xs": "MOSTLY_IQ4_XS",
    "iq3_m": "MOSTLY_IQ3_M",
    "iq3_s": "MOSTLY_IQ3_S",
    "iq3_xs": "MOSTLY_IQ3_XS",
    "iq3_xxs": "MOSTLY_IQ3_XXS",
    "iq2_m": "MOSTLY_IQ2_M",
    "iq2_s": "MOSTLY_IQ2_S",
    "iq2_xs": "MOSTLY_IQ2_XS",
    "iq2_xxs": "MOSTLY_IQ2_XXS",
    "iq1_m": "MOSTLY_IQ1_M",
    "iq1_s": "MOSTLY_IQ1_S",
}
# Average bits per weight of each type, known before quantizing (the pre-flight fit check). Single block types: their
# block layout (q8_0: 32 int8 + an fp16 scale = 8.5; q4_0 4.5; q6_K 6.5625; q2_K 2.625; ...). The _s/_m/_l mixes and
# q2_k keep some tensors (output, attn_v, ffn_down) at wider types: approximate averages of llama.cpp's mixes on
# Llama-class models, so an estimate, not the file (whose real types are logged after quantizing). A row width that
# is not a multiple of 256 makes K-quants fall back to legacy types (SmolLM2: most of "q4_k_m" is Q5_0).
BITS_PER_WEIGHT = {
    "f16": 16.0,
    "bf16": 16.0,
    "q8_0": 8.5,
    "q6_k": 6.5625,
    "q5_k_m": 5.7,
    "q5_k_s": 5.5,
    "q5_0": 5.5,
    "q5_1": 6.0,
    "q4_k_m": 4.85,
    "q4_k_s": 4.6,
    "q4_0": 4.5,
    "q4_1": 5.0,
    "q3_k_l": 4.3,
    "q3_k_m": 3.9,
    "q3_k_s": 3.5,
    "q2_k": 2.6,
    "iq4_nl": 4.5,
    "iq4_xs": 4.25,
    "iq3_m": 3.7,
    "iq3_s": 3.44,
    "iq3_xs": 3.3,
    "iq3_xxs": 3.06,
    "iq2_m": 2.7,
    "iq2_s": 2.5,
    "iq2_xs": 2.31,
    "iq2_xxs": 2.06,
    "iq1_m": 1.75,
    "iq1_s": 1.56,
}
# llama.cpp throws ("Missing importance matrix for tensor ...") for these without one (llama-quant.cpp)
NEEDS_IMATRIX = ("iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq1_s", "iq1_m")
CONVERTER_FILES = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/conversion", "vendor/llama.cpp/gguf-py")


def llama_cpp_module(key: str = "format.family"):
    """Imported, not just found: a broken install must fail here, naming the extra, not mid-quantize."""
    return packages.import_or_fail(
        "llama_cpp",
        key,
        "GGUF needs llama-cpp-python, which is not installed",
        "pip install -e '.[gguf]' (make venv installs it)",
    )


class GgufFormat(Format):
    def uses_calibration(self, cfg) -> bool:
        return bool(cfg.imatrix)

    def weight_bits(self, cfg, base_config=None, tensor_parallel=1):
        bits = BITS_PER_WEIGHT.get(cfg.quant_type)
        return None if bits is None else WeightBits(bits, bits, what=f"GGUF {cfg.quant_type}: ~{bits} bits per weight")

    def validate(self, cfg, model) -> None:
        if cfg.quant_type not in QUANT_TYPES:
            raise UserError(
                "format.quant_type", f"unknown GGUF type '{cfg.quant_type}'", f"use one of {sorted(QUANT_TYPES)}"
            )
        if cfg.quant_type in NEEDS_IMATRIX and not cfg.imatrix:
            raise UserError(
                "format.imatrix",
                f"llama.cpp refuses {cfg.quant_type} without an importance matrix",
                "set format.imatrix=true (computed from the calibration text) or use iq3_s / iq4_xs",
            )
        if cfg.engine not in ("llama_cpp", "torch"):  # torch: transformers dequantizes the file's weights
            raise UserError(
                "format.engine",
                f"GGUF files run on llama_cpp or torch, not '{cfg.engine}'",
                "set format.engine=llama_cpp (or torch for the file's dequantized weights)",
            )
        llama_cpp_module()

    def library_versions(self):
        return {
            "llama_cpp_python": packages.version("llama_cpp_python")
        }  # == llama_cpp.__version__, without the import

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache: Cache):
        base = convert_once(model, cache, hardware.threads)
        out = out_dir / f"model-{cfg.quant_type}.gguf"
        if cfg.quant_type == "f16":
            _link_or_copy(base, out)
            imatrix_info = None
        else:
            imatrix_info = None
            if cfg.imatrix:
                from runner.formats.gguf.imatrix import imatrix_for

                imatrix_info = imatrix_for(model, base, calibration, hardware, cache)
            quantize_file(base, out, cfg.quant_type, hardware.threads, imatrix_info["data"] if imatrix_info else None)
        report = tensor_report(out, check_gguf(out, "format.quant_type"))
        extras = {"weight_files": [out.name], "quant_type": cfg.quant_type, **report}
        if imatrix_info:
            extras["imatrix"] = {k: v for k, v in imatrix_info.items() if k != "data"}
        return extras


def quantize_file(src: Path, dst: Path, quant_type: str, threads: int, imatrix=None, allow_requantize=False) -> None:
    """The bare llama.cpp call: llama_model_quantize(src, dst, params)."""
    llama_cpp = llama_cpp_module()
    # llama.cpp logs one line per fallback tensor (the manifest records the real types): to the job log
    route_llama_cpp_log()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{QUANT_TYPES[quant_type]}")
    params.nthread = threads
    params.allow_requantize = allow_requantize
    if imatrix is not None:
        params.imatrix = ctypes.cast(imatrix, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({quant_type}) returned {rc}")


def converter_dir(cache: Cache) -> Path:
    """llama.cpp's convert_hf_to_gguf.py with its own gguf-py, from the sdist of the installed llama-cpp-python."""
    version = llama_cpp_module().__version__
    return (
        sdist_folder(f"llama-cpp-python=={version}", cache, "format.family", CONVERTER_FILES) / "vendor" / "llama.cpp"
    )


def convert_once(model, cache: Cache, threads: int = 2) -> Path:
    """The model as an f16 GGUF, cached by model identity and llama.cpp version.

    A model that came from a GGUF is requantized from that file (allow_requantize), which keeps
    its tokenizer metadata exactly: the HF tokenizer transformers rebuilds from a GGUF is not one
    llama.cpp's converter reproduces faithfully (byte-level BPE marked byte_fallback turns into a
    SentencePiece vocab that llama.cpp cannot tokenize text with). Any other model goes through
    llama.cpp's convert_hf_to_gguf.py.
    """
    version = llama_cpp_module().__version__
    via = f"requantize:{model.source_gguf.name}" if model.source_gguf else "convert_hf_to_gguf"
    key = Cache.key("gguf_f16", model.identity, version, via)

    def build(folder):
        if model.source_gguf:
            check_gguf(model.source_gguf, "model.id")
            log.info("requantizing %s to f16 (once per model)", model.source_gguf.name)
            quantize_file(model.source_gguf, folder / "model-f16.gguf", "f16", threads, allow_requantize=True)
        else:
            _convert_hf(model, folder / "model-f16.gguf", converter_dir(cache))
        check_gguf(folder / "model-f16.gguf", "model.id")

    return cache.get_or_build("gguf_base", key, build, label=f"{model.name} f16 GGUF") / "model-f16.gguf"


def _convert_hf(model, out: Path, conv: Path) -> None:
    log.info("converting %s to an f16 GGUF with llama.cpp's converter (once per model)", model.name)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(conv / "gguf-py"), str(conv)]), NO_LOCAL_GGUF="")
    cmd = [
        sys.executable,
        str(conv / "convert_hf_to_gguf.py"),
        str(model.path),
        "--outfile",
        str(out),
        "--outtype",
        "f16",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = [l for l in (proc.stderr + proc.stdout).strip().splitlines() if l.strip()][-1:] or ["no output"]
        if "not supported" in tail[0].lower():
            raise UserError(
                "model.id",
                f"llama.cpp's converter does not support this model ({tail[0].strip()[-160:]})",
                "use a torch-engine format (fp16, bf16, ...) for this architecture",
            )
        raise RuntimeError(f"convert_hf_to_gguf.py failed: {tail[0]}")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same bytes, no extra disk; the cache never modifies entries in place
    except OSError:
        shutil.copy2(src, dst)
