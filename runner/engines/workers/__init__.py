"""Scripts that other venvs' pythons run (vLLM, OpenVINO): standard library + their library only, never `runner`;
they share jsonlines_protocol.py, the worker side of runner/engines/worker_client.py."""
