"""GGUF: llama.cpp's conversion and quantization (format.py), reading GGUF files (files.py), importance matrices
(imatrix.py)."""
