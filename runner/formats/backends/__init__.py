"""Library-specific quantizers used by the weight-only formats (gptq, awq, int8, nf4, autoround).

Each module imports its library lazily (inside functions) and handles that library's CPU pitfalls.
Functions take plain arguments (folders, token-id lists, numbers, an IntGrid) and write a HF folder.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class IntGrid:
    """The integer grid a calibrated INT backend (gptqmodel, AutoAWQ, auto-round) rounds the weights to."""

    bits: int
    group_size: int  # weights of a row that share one scale (and zero point); -1: the whole row
    sym: bool  # True: no zero point (AWQ's zero_point is `not sym`)

    @classmethod
    def of(cls, cfg) -> "IntGrid":
        """The grid a GPTQ-style schema names (bits, group_size, sym): gptq and autoround."""
        return cls(cfg.bits, cfg.group_size, cfg.sym)
