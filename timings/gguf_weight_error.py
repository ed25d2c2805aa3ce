"""Weight-level error of cached GGUF files vs their f16 base, and Q5_0 / Q5_1 / Q4_1 on the base as it is
vs the base with its rounding undone (docs/formats.md, "Why `gguf_q5_k_m` scores worse than `gguf_q4_k_m` on
SmolLM2").

Reads the f16 base and the q4_k_m / q5_k_m artifacts from the cache (run those presets first), dequantizes
with gguf-py, and quantizes with gguf-py's port of llama.cpp's reference quantizers (checked against the
files' bytes).  python timings/gguf_weight_error.py  [QRUN_CACHE_DIR=...]
"""

import glob
import os
from collections import defaultdict

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.quants import dequantize, quantize

C = os.environ.get("QRUN_CACHE_DIR", ".qrun_cache")
base_path = glob.glob(f"{C}/gguf_base/*/model-f16.gguf")[0]
base = {t.name: t for t in GGUFReader(base_path).tensors}


def base_w(name):
    t = base[name]
    return dequantize(t.data, t.tensor_type).astype(np.float32)


for qt in ("q4_k_m", "q5_k_m"):
    path = glob.glob(f"{C}/artifacts/*/model-{qt}.gguf")[0]
    err, ref, n = defaultdict(float), defaultdict(float), defaultdict(int)
    same_bytes = None
    for t in GGUFReader(path).tensors:
        if t.tensor_type in (T.F32,):
            continue
        w = base_w(t.name)
        wq = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(w.shape)
        k = t.tensor_type.name
        err[k] += float(((wq - w) ** 2).sum())
        ref[k] += float((w**2).sum())
        n[k] += w.size
        if k in ("Q5_1", "Q5_0") and same_bytes is None:  # is llama.cpp's quantizer the reference one?
            same_bytes = bool(
                np.array_equal(quantize(w, t.tensor_type), np.asarray(t.data).reshape(quantize(w, t.tensor_type).shape))
            )
    print(
        qt,
        {k: f"relMSE {err[k] / ref[k]:.3e} over {n[k] / 1e6:.1f}M" for k in err},
        "file bytes == gguf-py reference quantizer:",
        same_bytes,
    )

# controlled: the 576-wide linear weights (the ones that fall back), quantized by the reference quantizers
rng = np.random.default_rng(0)
names = [n for n, t in base.items() if n.startswith("blk.") and t.data.ndim == 2 and t.data.shape[-1] == 576]
res = defaultdict(lambda: [0.0, 0.0])
for name in names:
    w = base_w(name)
    blocks = w.reshape(-1, 32)
    step = (blocks.max(1, keepdims=True) - blocks.min(1, keepdims=True)) / 15  # the Q4_1 step of each block
    levels = np.mean([len(np.unique(b)) for b in blocks[:200]])
    cont = (blocks + rng.uniform(-0.5, 0.5, blocks.shape).astype(np.float32) * step).reshape(w.shape)  # rounding undone
    for label, x in (("q4_1_rounded", w), ("continuous", cont)):
        for qt in (T.Q5_0, T.Q5_1, T.Q4_1):
            xq = dequantize(quantize(x, qt), qt).reshape(x.shape)
            res[(label, qt.name)][0] += float(((xq - x) ** 2).sum())
            res[(label, qt.name)][1] += float((x**2).sum())
print(
    f"{len(names)} tensors 576 wide; distinct values per 32-block in the base (first 200 blocks of the last): "
    f"{levels:.1f}"
)
for (label, qt), (e, r) in sorted(res.items()):
    print(f"  {label:13s} {qt}: relMSE {e / r:.3e}")
