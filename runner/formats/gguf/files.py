"""GGUF file facts: validation (magic, header, truncation) and the tensor types really stored.

A small header reader instead of gguf.GGUFReader: that one materializes every metadata value
(e.g. ~100k tokenizer strings) as numpy views and takes seconds per file; this one skips
values it does not need and reads only the tensor table.
"""

import mmap
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from runner.errors import UserError

_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")


@dataclass
class GgufTensor:
    name: str
    type_id: int
    n_elements: int
    offset: int  # from the start of the data section
    n_bytes: int


@dataclass
class GgufHeader:
    version: int
    metadata: Dict[str, Any] = field(default_factory=dict)  # scalars and strings; arrays as their length
    tensors: List[GgufTensor] = field(default_factory=list)
    data_start: int = 0


def read_header(path: Path) -> GgufHeader:
    import gguf

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        pos = 0

        def take(fmt):
            nonlocal pos
            values = struct.unpack_from("<" + fmt, buf, pos)
            pos += struct.calcsize("<" + fmt)
            return values[0]

        def string():
            nonlocal pos
            n = take("Q")
            s = bytes(buf[pos : pos + n]).decode("utf-8", errors="replace")
            pos += n
            return s

        def value(vtype):
            nonlocal pos
            if vtype in _SCALAR:
                return take(_SCALAR[vtype])
            if vtype == _STRING:
                return string()
            if vtype == _ARRAY:
                item, count = take("I"), take("Q")
                if item in _SCALAR:
                    pos += count * struct.calcsize(_SCALAR[item])
                elif item == _STRING:  # tokenizer vocabularies: ~100k strings, skipped without decoding
                    u64 = _U64.unpack_from
                    for _ in range(count):
                        pos += 8 + u64(buf, pos)[0]
                else:
                    for _ in range(count):
                        value(item)
                return count
            raise ValueError(f"unknown metadata value type {vtype}")

        if bytes(buf[:4]) != b"GGUF":
            raise ValueError("bad magic")
        pos = 4
        header = GgufHeader(version=take("I"))
        n_tensors, n_kv = take("Q"), take("Q")
        for _ in range(n_kv):
            key = string()
            header.metadata[key] = value(take("I"))
        raw = []
        for _ in range(n_tensors):
            name = string()
            dims = [take("Q") for _ in range(take("I"))]
            type_id, offset = take("I"), take("Q")
            raw.append((name, dims, type_id, offset))
        align = int(header.metadata.get("general.alignment", 32))
        header.data_start = (pos + align - 1) // align * align
        for name, dims, type_id, offset in raw:
            n = 1
            for d in dims:
                n *= d
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)]
            header.tensors.append(GgufTensor(name, type_id, n, offset, n // block * type_size))
        return header


def check_gguf(path: Path, key: str) -> GgufHeader:
    """The header of `path`, or a UserError unless it is a complete, readable GGUF file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(key, f"no such file '{path}'", "pass an existing .gguf file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise UserError(key, f"'{path}' is not a GGUF file (starts with {magic!r}, not b'GGUF')", "pass a .gguf file")
    try:
        header = read_header(path)
        size = path.stat().st_size
        for t in header.tensors:
            if header.data_start + t.offset + t.n_bytes > size:
                raise ValueError(f"tensor {t.name} ends past the end of the file")
    except Exception as e:  # header cut short, bad counts, tensors past EOF...
        raise UserError(
            key,
            f"'{path}' is a truncated or corrupt GGUF file ({type(e).__name__}: {str(e)[:120]})",
            "re-download or re-create the file",
        ) from e
    return header


def tensor_report(path: Path, header: GgufHeader | None = None) -> Dict[str, Any]:
    """Histogram of stored tensor types, their parameter share, and the effective bits per weight."""
    import gguf

    header = header or read_header(path)
    counts, elements, nbytes = Counter(), defaultdict(int), defaultdict(int)
    for t in header.tensors:
        name = gguf.GGMLQuantizationType(t.type_id).name
        counts[name] += 1
        elements[name] += t.n_elements
        nbytes[name] += t.n_bytes
    total_el, total_b = sum(elements.values()), sum(nbytes.values())
    types = {
        name: {
            "tensors": counts[name],
            "params_pct": round(100.0 * elements[name] / total_el, 2),
            "bits_per_weight": round(8.0 * nbytes[name] / elements[name], 3),
        }
        for name in sorted(counts, key=lambda n: -elements[n])
    }
    return {
        "tensor_types": types,
        "tensor_bytes": total_b,
        "gguf_bits_per_weight": 8.0 * total_b / total_el,
        "gguf_architecture": header.metadata.get("general.architecture"),
        "n_tensors": len(header.tensors),
    }
