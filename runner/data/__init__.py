"""Inputs: the base model, the eval and calibration texts, tokenization."""
