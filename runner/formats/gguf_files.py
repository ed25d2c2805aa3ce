"""GGUF file facts: validation (magic, header, truncation) and the tensor types really stored."""
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict

from runner.errors import UserError


def check_gguf(path: Path, key: str) -> None:
    """UserError unless `path` is a complete, readable GGUF file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(key, f"no such file '{path}'", "pass an existing .gguf file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise UserError(key, f"'{path}' is not a GGUF file (starts with {magic!r}, not b'GGUF')", "pass a .gguf file")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path)
        size = path.stat().st_size
        for t in reader.tensors:
            if t.data_offset + t.n_bytes > size:
                raise ValueError(f"tensor {t.name} ends past the end of the file")
    except UserError:
        raise
    except Exception as e:  # header cut short, bad counts, tensors past EOF...
        raise UserError(key, f"'{path}' is a truncated or corrupt GGUF file ({type(e).__name__}: {str(e)[:120]})",
                        "re-download or re-create the file") from e


def tensor_report(path: Path) -> Dict[str, Any]:
    """Histogram of stored tensor types, their parameter share, and the effective bits per weight."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    counts, elements, nbytes = Counter(), defaultdict(int), defaultdict(int)
    for t in reader.tensors:
        name = t.tensor_type.name
        counts[name] += 1
        elements[name] += int(t.n_elements)
        nbytes[name] += int(t.n_bytes)
    total_el, total_b = sum(elements.values()), sum(nbytes.values())
    types = {
        name: {"tensors": counts[name], "params_pct": round(100.0 * elements[name] / total_el, 2),
               "bits_per_weight": round(8.0 * nbytes[name] / elements[name], 3)}
        for name in sorted(counts, key=lambda n: -elements[n])
    }
    arch = reader.fields.get("general.architecture")
    return {
        "tensor_types": types,
        "tensor_bytes": total_b,
        "gguf_bits_per_weight": 8.0 * total_b / total_el,
        "gguf_architecture": bytes(arch.parts[arch.data[0]]).decode() if arch else None,
        "n_tensors": sum(counts.values()),
    }

