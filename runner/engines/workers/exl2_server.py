"""An OpenAI-compatible /v1/completions server for an EXL2 folder: ExLlamaV2's dynamic generator (continuous batching
over a paged KV cache) behind the streaming protocol the serving benchmark's load generator speaks.

    python runner/engines/workers/exl2_server.py --model DIR --host 127.0.0.1 --port N --slots S \
        --context-per-slot C --gpu-split 10.5,30 --served-name NAME

Standard library + exllamav2 (+ torch, which it brings) only: it imports no runner module, so what it holds in
memory is the deployment's. ExLlamaV2 has no pip-installable OpenAI server (TabbyAPI is not on PyPI), hence this one.

- The cache holds slots x context-per-slot tokens (pages of 256), not the model's max_seq_len (131072 on Llama 3.1:
  ~16 GiB of KV cache on an 8B model); the generator runs at most `slots` sequences at once, each up to
  context-per-slot tokens, and queues the rest.
- The weights go to the listed GPUs in order, up to each one's GiB (ExLlamaV2's manual split: `model.load(gpu_split)`);
  the cache layers follow their attention layers.
- Requests: `prompt` as text or token ids, `max_tokens`, `min_tokens`, `ignore_eos` (no stop token: exactly
  max_tokens), greedy only (temperature 0: the benchmark's requests), `stream` with `stream_options.include_usage`,
  `return_token_ids`. Streamed chunks are vLLM's/OpenAI's: `choices[0].text` (+ `token_ids`), a last chunk with the
  `finish_reason`, then a `usage` chunk and `data: [DONE]`.
- Bound to loopback only (the benchmark's host); GET /health answers 200 once the model is loaded.
"""

import argparse
import ipaddress
import itertools
import json
import queue
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional

PAGE = 256  # ExLlamaV2's paged attention page: the cache and each sequence's length are multiples of it


class BadRequest(ValueError):
    pass


def parse_request(body: Dict[str, Any], served_name: str, max_context: int, encode: Callable[[str], List[int]]):
    """The generation a /v1/completions body asks for: {ids, max_new_tokens, min_new_tokens, ignore_eos, stream,
    include_usage, token_ids}; BadRequest (HTTP 400) for what this server does not do."""
    model = body.get("model")
    if model not in (None, served_name):
        raise BadRequest(f"model '{model}' is not served here (this server serves '{served_name}')")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (list, str)):
        prompt = prompt[0]  # one prompt given as a batch of one
    if isinstance(prompt, str):
        ids = encode(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        ids = list(prompt)
    else:
        raise BadRequest("prompt must be one text or one list of token ids")
    max_tokens = body.get("max_tokens", 16)
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest(f"max_tokens must be a positive integer (got {max_tokens!r})")
    min_tokens = body.get("min_tokens", 0) or 0
    if not isinstance(min_tokens, int) or not 0 <= min_tokens <= max_tokens:
        raise BadRequest(f"min_tokens must be an integer in 0..max_tokens (got {min_tokens!r})")
    temperature = body.get("temperature", 0.0)
    if temperature not in (0, 0.0, None):
        raise BadRequest("only greedy decoding (temperature 0) is served here")
    if int(body.get("n", 1) or 1) != 1:
        raise BadRequest("n must be 1")
    if len(ids) + max_tokens > max_context:
        raise BadRequest(
            f"{len(ids)} prompt + {max_tokens} new tokens exceed this server's context per sequence ({max_context})"
        )
    options = body.get("stream_options") or {}
    return {
        "ids": ids,
        "max_new_tokens": max_tokens,
        "min_new_tokens": min_tokens,
        "ignore_eos": bool(body.get("ignore_eos", False)),
        "stream": bool(body.get("stream", False)),
        "include_usage": bool(options.get("include_usage", False)),
        "token_ids": bool(body.get("return_token_ids", False)),
    }


def completion_chunk(request_id: str, created: int, model: str, text: str, token_ids, finish: Optional[str]) -> dict:
    choice: Dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return {"id": request_id, "object": "text_completion", "created": created, "model": model, "choices": [choice]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def finish_reason(eos_reason: Optional[str]) -> str:
    """OpenAI's finish_reason for ExLlamaV2's eos_reason: 'length' when max_new_tokens ended it, else 'stop'."""
    return "length" if eos_reason == "max_new_tokens" else "stop"


def _ids(tensor) -> List[int]:
    """Token ids of one streamed result (a (1, n) tensor) as a list."""
    if tensor is None:
        return []
    return [int(t) for t in (tensor.flatten().tolist() if hasattr(tensor, "flatten") else tensor)]


class Scheduler:
    """Owns the generator: one thread enqueues jobs, runs generator.iterate() while any is left, and hands each
    request its streamed pieces through its own queue. The generator is not thread-safe: nothing else touches it."""

    def __init__(self, generator, make_job: Callable[..., Any]):
        self.generator, self.make_job = generator, make_job
        self.inbox: queue.Queue[tuple] = queue.Queue()
        self.outboxes: Dict[int, queue.Queue[tuple]] = {}
        self.jobs: Dict[int, Any] = {}
        self.serial = itertools.count()
        self.failed: Optional[str] = None
        threading.Thread(target=self._loop, daemon=True, name="exl2-generator").start()

    def submit(self, request: dict) -> "tuple[int, queue.Queue]":
        key, box = next(self.serial), queue.Queue[tuple]()
        self.outboxes[key] = box
        self.inbox.put(("add", key, request))
        return key, box

    def cancel(self, key: int) -> None:
        self.inbox.put(("cancel", key, None))

    def _take(self, block: bool) -> None:
        while True:
            try:
                op, key, request = self.inbox.get(block=block, timeout=None)
            except queue.Empty:
                return
            block = False
            if op == "add":
                job = self.make_job(request, identifier=key)
                self.jobs[key] = job
                self.generator.enqueue(job)
            elif key in self.jobs:
                self.generator.cancel(self.jobs.pop(key))
                self.outboxes.pop(key, None)

    def _loop(self) -> None:
        try:
            while True:
                self._take(block=self.generator.num_remaining_jobs() == 0)
                if self.generator.num_remaining_jobs() == 0:
                    continue
                for r in self.generator.iterate():
                    if r.get("stage") != "streaming":
                        continue
                    key = r["identifier"]
                    box = self.outboxes.get(key)
                    if box is None:
                        continue
                    box.put(("tokens", r.get("text", ""), _ids(r.get("token_ids"))))
                    if r.get("eos"):
                        box.put(("end", finish_reason(r.get("eos_reason")), None))
                        self.jobs.pop(key, None)
                        self.outboxes.pop(key, None)
        except Exception as e:  # noqa: BLE001 (a generator failure ends every request with its message)
            self.failed = f"{type(e).__name__}: {e}"
            for box in list(self.outboxes.values()):
                box.put(("error", self.failed, None))
            print(f"exl2 server: the generator failed: {self.failed}", file=sys.stderr, flush=True)


def make_handler(state: dict):
    """The HTTP handler over state = {scheduler, served_name, max_context, encode, ready}."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the stream ends when the connection closes (and with data: [DONE])

        def log_message(self, fmt, *args):  # one line per request would drown the log
            pass

        def _json(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                ok = state["ready"] and state["scheduler"].failed is None
                self._json(200 if ok else 503, {"status": "ok" if ok else "loading or failed"})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": state["served_name"], "object": "model"}]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path != "/v1/completions":
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                req = parse_request(body, state["served_name"], state["max_context"], state["encode"])
            except (BadRequest, ValueError) as e:
                self._json(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
                return
            if not state["ready"] or state["scheduler"].failed:
                self._json(503, {"error": {"message": state["scheduler"].failed or "loading"}})
                return
            key, box = state["scheduler"].submit(req)
            try:
                self._answer(req, key, box)
            except (BrokenPipeError, ConnectionResetError):
                state["scheduler"].cancel(key)  # the client left: free its pages

        def _answer(self, req: dict, key: int, box: "queue.Queue[tuple]") -> None:
            rid, created, name = f"cmpl-{key}", int(time.time()), state["served_name"]
            ids_wanted = req["token_ids"]
            if req["stream"]:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
            texts: List[str] = []
            n_out = 0
            while True:
                kind, a, b = box.get()
                if kind == "error":
                    if req["stream"]:
                        self._event({"error": {"message": a}})
                        break
                    self._json(500, {"error": {"message": a}})
                    return
                if kind == "tokens":
                    n_out += len(b)
                    texts.append(a)
                    if req["stream"] and (a or b):
                        self._event(completion_chunk(rid, created, name, a, b if ids_wanted else None, None))
                    continue
                finish = a
                if not req["stream"]:
                    out = completion_chunk(rid, created, name, "".join(texts), None, finish)
                    out["usage"] = usage(len(req["ids"]), n_out)
                    self._json(200, out)
                    return
                self._event(completion_chunk(rid, created, name, "", [] if ids_wanted else None, finish))
                if req["include_usage"]:
                    self._event(
                        {
                            "id": rid,
                            "object": "text_completion",
                            "created": created,
                            "model": name,
                            "choices": [],
                            "usage": usage(len(req["ids"]), n_out),
                        }
                    )
                break
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def _event(self, obj: dict) -> None:
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

    return Handler


def serve(state: dict, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for state on host:port (loopback only), its requests each on a thread."""
    if not (host == "localhost" or ipaddress.ip_address(host).is_loopback):
        raise SystemExit(f"exl2 server: {host} is not a loopback address; this server only binds to this machine")

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True  # a request's thread never keeps the process alive
        request_queue_size = 1024  # listen backlog: socketserver's 5 would drop the SYNs of 50 users arriving at once

    return Server((host, port), make_handler(state))


def load_generator(model_dir: str, slots: int, per_slot: int, gpu_split: List[float]):
    """ExLlamaV2's model on the listed GPUs, a cache of slots x per_slot tokens and the dynamic generator over it:
    (generator, tokenizer, make_job)."""
    import torch
    from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
    from exllamav2.generator import ExLlamaV2DynamicGenerator, ExLlamaV2DynamicJob, ExLlamaV2Sampler

    config = ExLlamaV2Config(model_dir)
    config.arch_compat_overrides()
    if per_slot > config.max_seq_len:
        raise SystemExit(
            f"exl2 server: {per_slot} tokens per sequence exceed the model's max_seq_len ({config.max_seq_len})"
        )
    model = ExLlamaV2(config)
    model.load(gpu_split=gpu_split)
    cache = ExLlamaV2Cache(model, max_seq_len=slots * per_slot)  # after the load: on the layers' devices
    tokenizer = ExLlamaV2Tokenizer(config)
    generator = ExLlamaV2DynamicGenerator(
        model=model, cache=cache, tokenizer=tokenizer, max_batch_size=slots, max_seq_len=per_slot, paged=True
    )
    generator.warmup()
    greedy = ExLlamaV2Sampler.Settings.greedy()
    eos = [t for t in (tokenizer.eos_token_id,) if t is not None]

    def make_job(request: dict, identifier: int):
        return ExLlamaV2DynamicJob(
            input_ids=torch.tensor([request["ids"]], dtype=torch.long),
            max_new_tokens=request["max_new_tokens"],
            min_new_tokens=request["min_new_tokens"],
            gen_settings=greedy,
            stop_conditions=[] if request["ignore_eos"] else eos,  # none: exactly max_new_tokens
            identifier=identifier,
        )

    def encode(text: str) -> List[int]:
        return tokenizer.encode(text, add_bos=False).flatten().tolist()

    return generator, encode, make_job


def startup_line(served_name: str, slots: int, per_slot: int) -> str:
    """The log line that says what the cache holds (runner/engines/exllamav2.py SERVER_CACHE_LINE reads it back)."""
    return f"exl2 server: {served_name} ready, {slots} slots x {per_slot} tokens: KV cache of {slots * per_slot} tokens"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--slots", type=int, required=True, help="sequences generated at once (the generator's batch)")
    p.add_argument("--context-per-slot", type=int, required=True, help="tokens per sequence, a multiple of 256")
    p.add_argument("--gpu-split", required=True, help="GiB of weights per GPU, comma-separated, in device order")
    p.add_argument("--served-name", required=True)
    args = p.parse_args(argv)
    if args.context_per_slot % PAGE or args.slots < 1:
        raise SystemExit(f"exl2 server: --context-per-slot must be a multiple of {PAGE} and --slots at least 1")
    state: Dict[str, Any] = {"served_name": args.served_name, "max_context": args.context_per_slot, "ready": False}
    generator, state["encode"], make_job = load_generator(
        args.model, args.slots, args.context_per_slot, [float(x) for x in args.gpu_split.split(",")]
    )
    state["scheduler"] = Scheduler(generator, make_job)
    httpd = serve(state, args.host, args.port)
    state["ready"] = True
    print(startup_line(args.served_name, args.slots, args.context_per_slot), file=sys.stderr, flush=True)
    httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
