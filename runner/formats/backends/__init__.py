"""Library-specific quantizers used by the weight-only formats (gptq, awq, int8, nf4).

Each module imports its library lazily (inside functions) and handles that library's CPU pitfalls.
Functions take plain arguments (folders, token-id lists, numbers) and write a HF folder.
"""
