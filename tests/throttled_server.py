"""A real OpenAI-style streaming server on 127.0.0.1 whose service rate the test sets (tests only).

`python tests/throttled_server.py --port P --service-s S [--fail-every K] [--held-back H] [--startup-peak-mb M]`:
GET /health answers 200;
POST /v1/completions streams `max_tokens` one-token chunks over S seconds, one request at a time in
arrival order (an asyncio.Lock is FIFO), so c closed-loop users see a latency of about c x S; with
--fail-every K every K-th completion request is answered 503 at once. A client that goes away does
not free the server early (it finishes the request, as a real single-slot server does).
--held-back H: the first H chunks of each response carry a token id but no text, as vLLM streams tokens
whose bytes are an incomplete UTF-8 character (`return_token_ids`).
--startup-peak-mb M: before it listens, it holds M MB of touched memory for a second and frees it, as a server
whose model load peaks above what it holds while serving.
"""

import argparse
import asyncio
import json
import time


def _response(status: str, body: bytes, ctype: str = "text/plain") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def serve(port: int, service_s: float, fail_every: int, held_back: int = 0) -> None:
    lock, count = asyncio.Lock(), [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if path == "/health":
                    writer.write(_response("200 OK", b"ok"))
                    await writer.drain()
                    continue
                if method != "POST" or path != "/v1/completions":
                    writer.write(_response("404 Not Found", b"no such route"))
                    await writer.drain()
                    continue
                count[0] += 1
                if fail_every and count[0] % fail_every == 0:
                    writer.write(
                        _response(
                            "503 Service Unavailable",
                            b'{"error": "throttled server: injected failure"}',
                            "application/json",
                        )
                    )
                    await writer.drain()
                    continue
                n = int(json.loads(body)["max_tokens"])
                async with lock:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                    )
                    for i in range(n):
                        await asyncio.sleep(service_s / n)
                        choice = {
                            "text": "" if i < held_back else "x",
                            "token_ids": [i],
                            "finish_reason": "length" if i == n - 1 else None,
                        }
                        event = {"choices": [choice]}
                        writer.write(_chunk(f"data: {json.dumps(event)}\n\n".encode()))
                        try:
                            await writer.drain()
                        except ConnectionError:
                            pass  # the client left: keep the slot busy for the rest of the request
                    writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--service-s", type=float, required=True)
    ap.add_argument("--fail-every", type=int, default=0)
    ap.add_argument("--held-back", type=int, default=0)
    ap.add_argument("--startup-peak-mb", type=int, default=0)
    args = ap.parse_args()
    if args.startup_peak_mb:
        loading = bytearray(args.startup_peak_mb * 1024 * 1024)
        loading[::4096] = b"1" * len(loading[::4096])  # every page touched: resident
        time.sleep(1.0)
        del loading  # a buffer this large is its own mapping: freed back to the OS
    asyncio.run(serve(args.port, args.service_s, args.fail_every, args.held_back))


if __name__ == "__main__":
    main()
