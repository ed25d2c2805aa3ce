"""Speed and memory, both benchmark kinds side by side (the benchmark stage picks one, runner/stages/benchmark.py).

offline: worker.py, a fresh process that imports only the engine and times one stream. serving:
serving.py runs a real OpenAI-compatible server for the artifact (servers/: how each engine's server
starts, process.py starts and stops it) under the load loadgen.py sends and summarizes; capacity.py
searches the largest concurrency within the SLO. probes.py samples peak memory for both kinds.
"""
