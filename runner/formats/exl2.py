"""EXL2 (ExLlamaV2): GPTQ-style mixed precision at a target average bits per weight. CUDA only.

exllamav2's converter (`python -m exllamav2.conversion.convert_exl2`, the module behind its
convert.py) works in two passes: a measurement pass that quantizes every module at several settings
and records the error, and a quantization pass that picks per-module settings for the target
bitrate. The measurement depends on the model and the calibration data only, so it runs once per
(model, calibration) and is cached under `exl2-measurements/`; every bitrate reuses it (`-m`).

Calibration: the calibration corpus is written as a Parquet file with one `text` column (what the
converter's `-c` reads: it joins each row's columns and tokenizes rows until it has rows x length
tokens). `calibration.n_samples` x `calibration.seq_len` are the rows x length of both passes.
"""

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

from omegaconf import OmegaConf

from runner.cache import Cache
from runner.data.corpus import load_corpus
from runner.errors import UserError
from runner.formats.base import Format, WeightBits
from runner.system import packages
from runner.system.gpu import require_cuda

log = logging.getLogger(__name__)
HEAD_BITS = (2, 3, 4, 5, 6, 8)  # exllamav2's qparams_headoptions
MEASUREMENTS = "exl2-measurements"  # cache kind
CAL_FILE, MEASUREMENT_FILE = "calibration.parquet", "measurement.json"


def _common_args(model_dir: Path, work_dir: Path, cal_file: Path, calibration) -> List[str]:
    rows, length = str(calibration.n_samples), str(calibration.seq_len)
    return [
        sys.executable,
        "-m",
        "exllamav2.conversion.convert_exl2",
        "-i",
        str(model_dir),
        "-o",
        str(work_dir),
        "-nr",
        "-c",
        str(cal_file),
        "-r",
        rows,
        "-l",
        length,
        "-mr",
        rows,
        "-ml",
        length,
    ]


def measure_command(model_dir: Path, work_dir: Path, cal_file: Path, calibration, measurement_out: Path) -> List[str]:
    """The measurement pass alone: writes measurement_out, then exits."""
    return _common_args(model_dir, work_dir, cal_file, calibration) + ["-om", str(measurement_out)]


def quantize_command(
    model_dir: Path, work_dir: Path, cal_file: Path, calibration, measurement: Path, out_dir: Path, cfg
) -> List[str]:
    """The quantization pass from a saved measurement: a full model folder in out_dir (-cf)."""
    return _common_args(model_dir, work_dir, cal_file, calibration) + [
        "-m",
        str(measurement),
        "-cf",
        str(out_dir),
        "-b",
        str(float(cfg.bpw)),
        "-hb",
        str(int(cfg.head_bits)),
    ]


def measurement_key(model_identity: str, calibration, corpus_sha256: str) -> str:
    """Same model + same calibration (settings and text) => same measurement, whatever the bitrate."""
    calib = OmegaConf.to_container(calibration, resolve=True)
    calib.pop("name", None)
    return Cache.key("exl2-measurement", model_identity, calib, corpus_sha256, packages.version("exllamav2"))


def write_calibration_parquet(text: str, path: Path, row_chars: int = 4000) -> int:
    """The text as rows of whole paragraphs (about row_chars each) in one `text` column; returns the row count."""
    import pandas as pd

    rows, current = [], ""
    for para in text.split("\n\n"):
        current = f"{current}\n\n{para}" if current else para
        if len(current) >= row_chars:
            rows.append(current)
            current = ""
    if current:
        rows.append(current)
    pd.DataFrame({"text": rows}).to_parquet(path, index=False)
    return len(rows)


def run_convert(cmd: List[str], expect: Path, log_path: Path) -> None:
    """Run the converter; it exits 0 after printing ' ## Error ...', so success = the expected file exists."""
    log.info("exllamav2: %s", " ".join(cmd[3:]))
    with open(log_path, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not expect.exists():
        lines = log_path.read_text(errors="replace").splitlines()
        errors = [l.strip() for l in lines if l.strip().startswith("##")] or [l.strip() for l in lines[-8:]]
        raise RuntimeError(f"exllamav2 convert failed (exit {proc.returncode}, no {expect.name}): {' | '.join(errors)}")


def _check_tokens(model, text: str, calibration) -> None:
    need = calibration.n_samples * calibration.seq_len
    have = len(model.load_tokenizer()(text, add_special_tokens=False)["input_ids"])
    if have < need:
        raise UserError(
            "calibration.n_samples",
            f"the calibration text has {have} tokens, EXL2 needs n_samples x seq_len = {need}",
            "lower calibration.n_samples or seq_len, or give a longer corpus",
        )


def ensure_measurement(model, calibration, cache: Cache) -> Tuple[Path, bool]:
    """The cached measurement entry for (model, calibration), made on first use. Returns (entry, reused)."""
    corpus = load_corpus(calibration.corpus, cache, "calibration.corpus")
    key = measurement_key(model.identity, calibration, corpus.sha256)
    hit = cache.get(MEASUREMENTS, key)
    if hit and (hit / MEASUREMENT_FILE).exists():
        return hit, True
    _check_tokens(model, corpus.text, calibration)
    built = []

    def build(folder):
        with tempfile.TemporaryDirectory(prefix=".exl2-work-", dir=folder.parent) as work_dir:
            work = Path(work_dir)
            n_rows = write_calibration_parquet(corpus.text, folder / CAL_FILE)
            start = time.perf_counter()
            run_convert(
                measure_command(model.path, work / "job", folder / CAL_FILE, calibration, folder / MEASUREMENT_FILE),
                folder / MEASUREMENT_FILE,
                work / "measure.log",
            )
            shutil.copy2(work / "measure.log", folder / "measure.log")
        meta = {
            "model": model.identity,
            "corpus_sha256": corpus.sha256,
            "corpus": corpus.description,
            "parquet_rows": n_rows,
            "measure_s": time.perf_counter() - start,
            "exllamav2": packages.version("exllamav2"),
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))
        built.append(folder)

    return cache.get_or_build(MEASUREMENTS, key, build), not built


class Exl2Format(Format):
    def weight_bits(self, cfg, base_config=None, tensor_parallel=1):
        # -b is the decoder layers' average (scales included), -hb the output head's; embeddings stay fp16
        return WeightBits(float(cfg.bpw), 16.0, float(cfg.head_bits), f"{cfg.bpw} bpw, head {cfg.head_bits} bits")

    USES_CALIBRATION = True

    def validate(self, cfg, model) -> None:
        if not 2.0 <= cfg.bpw <= 8.0:
            raise UserError("format.bpw", f"{cfg.bpw} is outside what EXL2 can reach", "use a value from 2.0 to 8.0")
        if cfg.head_bits not in HEAD_BITS:
            raise UserError(
                "format.head_bits", f"{cfg.head_bits} is not an exllamav2 head option", f"use one of {list(HEAD_BITS)}"
            )
        require_cuda("format", f"format {cfg.name} (EXL2, exllamav2)", "exllamav2", "exl2")

    def library_versions(self):
        return {"exllamav2": packages.version("exllamav2")}

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache: Cache):
        entry, reused = ensure_measurement(model, calibration, cache)
        log.info("EXL2 %.2f bpw from measurement %s (%s)", cfg.bpw, entry.name, "reused" if reused else "new")
        with tempfile.TemporaryDirectory(prefix=".exl2-work-", dir=out_dir.parent) as work:
            work = Path(work)
            cmd = quantize_command(
                model.path, work / "job", entry / CAL_FILE, calibration, entry / MEASUREMENT_FILE, out_dir, cfg
            )
            run_convert(cmd, out_dir / "config.json", work / "convert.log")
            shutil.copy2(work / "convert.log", out_dir / "convert.log")
        qcfg = json.loads((out_dir / "config.json").read_text()).get("quantization_config", {})
        if qcfg.get("quant_method") != "exl2":
            raise RuntimeError(f"exllamav2 wrote {out_dir / 'config.json'} without an exl2 quantization_config")
        meta = json.loads((entry / "meta.json").read_text())
        return {
            "weight_files": sorted(p.name for p in out_dir.glob("*.safetensors")),
            "exl2": {
                "target_bpw": float(cfg.bpw),
                "head_bits": int(cfg.head_bits),
                "measurement": entry.name,
                "measurement_reused": reused,
                "measurement_s": meta["measure_s"],
                "calibration_rows": calibration.n_samples,
                "calibration_length": calibration.seq_len,
                "quantization_config": qcfg,
            },
        }
