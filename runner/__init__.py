"""quant-runner: declarative quantize -> evaluate -> benchmark sweeps tracked in MLflow."""

__version__ = "0.1.0"
