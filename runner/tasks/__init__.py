"""Task accuracy through lm-evaluation-harness on every engine (eval.tasks).

registry: which tasks exist (offline ones in data/, hub ones by name); lm: lm-eval's LM over the engine
API; run: scoring with a cache and resume; stage: the `tasks` stage. Light: importing this package
imports no library (runner.metrics reads the task names from the registry).
"""
