"""llama.cpp's own `llama-perplexity --kl-divergence`: run it on two GGUF files and read what it prints.

The runner's quality numbers are checked against it (timings/llama_perplexity_ratio.py, and a slow test on the tiny
model). Its protocol (tools/perplexity/perplexity.cpp): `--kl-divergence-base FILE` runs the base model over the
text and writes the token ids and every scored position's log-probs (uint16-quantized over the top 16 nats) to FILE;
`--kl-divergence` runs a second model over the ids in that file and prints PPL, KLD, Δp and same-top-p statistics.
The runner's eval.windows=llama_perplexity scores the same positions (runner/quality/stream.py).
"""

import os
import re
import struct
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from runner.system import llama_cpp_tools

# what llama-perplexity prints at the end of --kl-divergence -> our names (values as printed: % where it says %)
_LINES = {
    "ppl": r"Mean PPL\(Q\)\s*:\s*([-\d.]+)",
    "ppl_base": r"Mean PPL\(base\)\s*:\s*([-\d.]+)",
    "ppl_ratio": r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*([-\d.]+)",
    "kld_mean": r"Mean\s+KLD:\s*([-\d.]+)",
    "kld_max": r"Maximum KLD:\s*([-\d.]+)",
    "kld_p99_9": r"99\.9%\s+KLD:\s*([-\d.]+)",
    "kld_p99": r"99\.0%\s+KLD:\s*([-\d.]+)",
    "kld_p90": r"90\.0%\s+KLD:\s*([-\d.]+)",
    "kld_p50": r"Median\s+KLD:\s*([-\d.]+)",
    "dp_mean_pct": r"Mean\s+Δp:\s*([-\d.]+)",
    "dp_rms_pct": r"RMS Δp\s*:\s*([-\d.]+)",
    "same_top_p_pct": r"Same top p:\s*([-\d.]+)",
}


ROUNDING = "_rounding"  # parse()'s key suffix: half a unit of the last digit printed


def parse(output: str) -> Dict[str, float]:
    """The final statistics of a --kl-divergence run, as fractions (Δp and same top p are printed in %), and for each
    `<name>_rounding`: half a unit of its last printed digit (llama-perplexity prints KLD with 6 decimals and Δp with
    3 decimals of a %: a tiny model's KLD of 1.4e-05 has two digits)."""
    out = {}
    for name, pattern in _LINES.items():
        found = re.findall(pattern, output)
        if not found:
            raise ValueError(f"llama-perplexity printed no '{name}' line:\n{output[-3000:]}")
        text = found[-1]
        value, rounding = float(text), 0.5 * 10.0 ** -len(text.partition(".")[2])
        if name.endswith("_pct"):
            name, value, rounding = name[: -len("_pct")], value / 100.0, rounding / 100.0
        out[name], out[name + ROUNDING] = value, rounding
    return out


def logits_file_tokens(path: Path) -> np.ndarray:
    """The token ids a --kl-divergence-base file holds: [n_chunk * n_ctx], BOS first where the vocab adds one."""
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            raise ValueError(f"{path} is not a llama-perplexity logits file")
        n_ctx, _n_vocab, n_chunk = struct.unpack("<Iii", f.read(12))
        return np.frombuffer(f.read(4 * n_ctx * n_chunk), dtype=np.int32).copy()


# llama.cpp's common logger prints from its own thread and is leaked on purpose at exit (common/log.cpp,
# common_log_main: "this design may cause logs to be lost if not flushed before the program exits"): on a busy
# machine llama-perplexity's last lines -- the final statistics -- were lost (seen here on the tiny model, exit 0).
# This library, preloaded, holds the exiting process for a moment so that thread prints them.
_DRAIN_C = """
#include <unistd.h>
__attribute__((destructor)) static void qrun_let_the_log_thread_finish(void) { usleep(DRAIN_US); }
"""
DRAIN_S = 2.0


def _drain_library() -> Path:
    """The preloadable library, in llama.cpp's tools folder (compiled once, with the C compiler)."""
    lib = llama_cpp_tools.home() / "qrun_drain_log.so"
    if not lib.is_file():
        lib.parent.mkdir(parents=True, exist_ok=True)
        src, part = lib.with_suffix(f".{os.getpid()}.c"), lib.with_suffix(f".{os.getpid()}.so")
        src.write_text(_DRAIN_C.replace("DRAIN_US", str(int(DRAIN_S * 1e6))))
        subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-o", str(part), str(src)], check=True)
        os.replace(part, lib)  # whole, even with another job compiling it too
        src.unlink()
    return lib


def _run(cmd: List[str]) -> str:
    env = dict(os.environ, LD_PRELOAD=str(_drain_library()))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}{proc.stdout[-3000:]}")
    return proc.stdout + proc.stderr


def common_args(n_ctx: int, threads: int, no_repack: bool) -> List[str]:
    """One sequence per decode (-b n_ctx), as the runner's engine decodes a window; weight repacking off where the
    runner's engine turns it off (llama.cpp's AMX buffers: runner/engines/llama_cpp.py)."""
    return [
        "-c",
        str(n_ctx),
        "-b",
        str(n_ctx),
        "-t",
        str(threads),
        "-ngl",
        "0",
        *(["--no-repack"] if no_repack else []),
    ]


def write_base(
    binary: Path, base_gguf: Path, text_file: Path, logits: Path, n_ctx: int, chunks: int, threads: int, no_repack: bool
) -> str:
    """--kl-divergence-base: the base model over the first `chunks` chunks of the text; its output."""
    cmd = [str(binary), "-m", str(base_gguf), "-f", str(text_file), "--chunks", str(chunks)]
    return _run(cmd + common_args(n_ctx, threads, no_repack) + ["--kl-divergence-base", str(logits)])


def compare(binary: Path, gguf: Path, logits: Path, n_ctx: int, threads: int, no_repack: bool) -> Dict[str, float]:
    """--kl-divergence of `gguf` against the base logits file: the parsed final statistics."""
    cmd = [str(binary), "-m", str(gguf), "--kl-divergence-base", str(logits), "--kl-divergence"]
    return parse(_run(cmd + common_args(n_ctx, threads, no_repack)))


def stream_tokens(ids: np.ndarray, bos_id: Optional[int], add_bos: bool, n: int) -> np.ndarray:
    """The first n ids llama-perplexity scores from a text whose ids (without BOS) are `ids`: BOS first if added."""
    full = np.concatenate([[bos_id], ids]) if add_bos else np.asarray(ids)
    return full[:n].astype(np.int32)
