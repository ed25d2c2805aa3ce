"""The configuration: Hydra schemas, the format families' table, presets, value checks, scenarios (the lowest layer
above errors, paths, metrics and system: it imports no stage, format implementation or engine)."""
