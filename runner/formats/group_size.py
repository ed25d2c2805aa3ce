"""The group size of a calibrated INT format (gptq, awq, autoround) when the preset leaves it to the model (null).

Groups run along a linear layer's input, so a size must divide the input width of every quantized linear.
Under tensor parallelism the row-parallel layers (the attention output and the MLP's down projection) hold
1/tp of their input on each GPU, and vLLM refuses a GPTQ/AWQ checkpoint whose groups straddle two GPUs ("The
input size is not aligned with the quantized weight shape"), so their width per GPU is what must be divisible.

The rule: 128, what deployed Llama-class checkpoints use, where every width allows it; else the largest power of
two below 128 that divides them all. Weights dequantized from a GGUF whose tensors are stored in blocks smaller
than that (Q4_1: 32 weights per scale and minimum) carry that block's rounding, and groups larger than the block
cannot re-express it: the size is capped at the block.

Pure functions of config.json, the hardware profile's tensor_parallel_size and the source's block, so the rule is
testable without a model or a GPU; runner/formats/backend_table.py applies it before the artifact's key is made.
"""

from typing import Dict, Iterable, Optional, Tuple

from runner.config.model_config import text_config

PREFERRED = 128
POWERS = (128, 64, 32, 16, 8, 4, 2, 1)


def input_widths(config: dict, tensor_parallel: int = 1) -> Dict[str, int]:
    """Input width of each kind of quantized linear, on one GPU of `tensor_parallel`, from config.json.

    Empty when config.json does not name the widths the usual way (hidden_size, intermediate_size)."""
    c = text_config(config)
    hidden = c.get("hidden_size")
    if not hidden:
        return {}
    heads = c.get("num_attention_heads") or 1
    head_dim = c.get("head_dim") or hidden // heads
    tp = max(1, tensor_parallel)
    widths = {"hidden_size (q/k/v, gate/up)": hidden, "attention output (o_proj)": heads * head_dim // tp}
    for key in ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size"):
        if c.get(key):
            widths[f"{key} (down_proj)"] = c[key] // tp
    return widths


def largest_dividing(widths: Iterable[int], cap: int = PREFERRED) -> int:
    """The largest power of two <= cap that divides every width."""
    widths = list(widths)
    return next(g for g in POWERS if g <= cap and all(w % g == 0 for w in widths))


def auto_group_size(
    config: dict,
    tensor_parallel: int = 1,
    tensor_widths: Iterable[int] = (),
    source_block: Optional[int] = None,
) -> Tuple[int, str]:
    """(group size, why) by the rule above. `tensor_widths`: the input widths of the weights actually stored
    (every quantized linear's, whole, as safetensors holds them); `source_block`: the smallest quantization block
    of the GGUF the weights were dequantized from, if any."""
    from_config = input_widths(config, tensor_parallel)
    widths = sorted(set(from_config.values()) | set(tensor_widths))
    if not widths:
        return PREFERRED, f"{PREFERRED}: no layer widths found in config.json or the weights"
    size = largest_dividing(widths)
    per_gpu = f" per GPU at tensor parallel {tensor_parallel}" if tensor_parallel > 1 else ""
    why = (
        f"{size}: divides every quantized input width{per_gpu} {widths}"
        if size == PREFERRED
        else f"{size}: the largest power of two <= {PREFERRED} dividing every quantized input width{per_gpu} {widths}"
    )
    if source_block and source_block < size:
        size = largest_dividing(widths, source_block)
        why += f"; capped at {size}: the weights were dequantized from a GGUF stored in blocks of {source_block}"
    return size, why


def misaligned_under_tp(group_size: int, config: dict, tensor_parallel: int) -> Dict[str, int]:
    """The widths per GPU (at `tensor_parallel`) that an explicit group size does not divide: what vLLM refuses."""
    if group_size <= 0 or tensor_parallel <= 1:
        return {}
    return {k: w for k, w in input_widths(config, tensor_parallel).items() if w % group_size}
