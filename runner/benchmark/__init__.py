"""benchmark.kind=serving: a real OpenAI-compatible server for the artifact under concurrent load.

process.py starts and stops a server (+ _launch.py, which ties it to qrun's life); servers/ says how
each engine's server is started; loadgen.py sends the load and summarizes it; benchmark.py runs the
whole benchmark. Memory sampling is runner/benchmark/probes.py's, shared with the offline kind.
"""
