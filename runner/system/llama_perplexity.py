"""llama.cpp's own `llama-perplexity --kl-divergence`: run it on two GGUF files and read what it prints.

The runner's quality numbers are checked against it (timings/llama_perplexity_ratio.py, and a slow test on the tiny
model). Its protocol (tools/perplexity/perplexity.cpp): `--kl-divergence-base FILE` runs the base model over the
text and writes the token ids and every scored position's log-probs (uint16-quantized over the top 16 nats) to FILE;
`--kl-divergence` runs a second model over the ids in that file and prints PPL, KLD, Δp and same-top-p statistics.
The runner's eval.windows=llama_perplexity scores the same positions (runner/quality/stream.py).
"""

import re
import struct
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

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


def parse(output: str) -> Dict[str, float]:
    """The final statistics of a --kl-divergence run, as fractions (Δp and same top p are printed in %)."""
    out = {}
    for name, pattern in _LINES.items():
        found = re.findall(pattern, output)
        if not found:
            raise ValueError(f"llama-perplexity printed no '{name}' line:\n{output[-3000:]}")
        value = float(found[-1])
        if name.endswith("_pct"):
            name, value = name[: -len("_pct")], value / 100.0
        out[name] = value
    return out


def logits_file_tokens(path: Path) -> np.ndarray:
    """The token ids a --kl-divergence-base file holds: [n_chunk * n_ctx], BOS first where the vocab adds one."""
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            raise ValueError(f"{path} is not a llama-perplexity logits file")
        n_ctx, _n_vocab, n_chunk = struct.unpack("<Iii", f.read(12))
        return np.frombuffer(f.read(4 * n_ctx * n_chunk), dtype=np.int32).copy()


def _run(cmd: List[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
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
