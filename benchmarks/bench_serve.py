"""``charlstm serve`` under concurrent streams against the engine it drives, side by side.

Serves RUN (default: an untrained model of the default shape, 1 x 512 LSTM, char vocabulary of
the corpus; speed does not depend on training) with uvicorn on 127.0.0.1 in a process of its own,
with ``--weights``, then for 1, 4, 16 and 64 concurrent streamed requests (each asks for --length
characters at temperature 0.8, its own seed) measures, over --rounds rounds:

    chars/s     all streams' characters / the wall time until the last ends
    ttfc med    median time from sending a request to its first character
    engine      the same number of rows written in this process by the engine the server
                drives (``generate`` with ``num_samples`` rows, the same length and weights),
                measured while the server is idle
    served/eng  the ratio: what the HTTP layer and the batcher keep of the engine's speed

With ``--one-at-a-time`` also the same server generating one request at a time (--max-batch 1).

    python benchmarks/bench_serve.py [RUN] [--weights fp32|int8] [--length 200] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import corpus_text, machine, write_json  # noqa: E402

import httpx  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402

from charlstm.config import ModelConfig  # noqa: E402
from charlstm.data.tokenizers import CharTokenizer  # noqa: E402
from charlstm.model import LanguageModel  # noqa: E402
from charlstm.serving.app import Server  # noqa: E402
from charlstm.serving.models import ServedModel, load_served  # noqa: E402
from charlstm.serving.requests import Limits  # noqa: E402

STREAMS = (1, 4, 16, 64)


def default_model(weights: str = "fp32") -> ServedModel:
    text, _ = corpus_text()
    tokenizer = CharTokenizer("".join(sorted(set(text))))
    torch.manual_seed(0)
    module = LanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size))  # the default shape
    config = module.config
    return ServedModel("default", module, tokenizer, torch.device("cpu"),
                       {"architecture": f"{config.cell} {config.num_layers}x{config.hidden_size}"}, weights=weights)


def served(run: str | None, weights: str) -> ServedModel:
    return load_served(run, "cpu", weights=weights) if run else default_model(weights)


def engine_rate(model: ServedModel, streams: int, length: int, rounds: int) -> float:
    """Characters per second of ``streams`` rows written by the engine in this process."""
    from charlstm.config import SampleConfig
    from charlstm.generation.sampling import generate

    rates = []
    for seed in range(rounds):
        config = SampleConfig(prime="The ", length=length, num_samples=streams, temperature=0.8, seed=seed,
                              weights=model.weights)
        started = time.perf_counter()
        chars = sum(len(piece) for pieces in generate(model.module, model.tokenizer, config, model.device) for piece in pieces)
        rates.append(chars / (time.perf_counter() - started))
    return statistics.median(rates)


def _serve(run: str | None, max_batch: int, port, weights: str = "fp32") -> None:
    """The server process: uvicorn on 127.0.0.1 (a free port, sent back through ``port``)."""
    import socket

    from charlstm.serving.batcher import serving_threads

    torch.set_num_threads(serving_threads())  # as charlstm serve does
    model = served(run, weights)
    server = Server([model], Limits(max_batch=max_batch, max_queue=max(STREAMS)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port.send(sock.getsockname()[1])
    config = uvicorn.Config(server.app, log_config=None, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


class Running:
    """A server on 127.0.0.1 in a process of its own, so the clients measuring it (in this
    process) do not share its interpreter lock, as real clients would not."""

    def __init__(self, run: str | None, max_batch: int, weights: str = "fp32"):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.port, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(run, max_batch, child, weights), daemon=True)

    def __enter__(self) -> str:
        self.process.start()
        url = f"http://127.0.0.1:{self.port.recv()}"
        for _ in range(6000):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        raise RuntimeError("the server did not get ready")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.join(30)


async def one_stream(port: int, length: int, seed: int) -> tuple[bytes, float]:
    """One streamed request over a plain socket: the raw response and the seconds to its first
    piece of text. The client only reads while the server writes (parsing waits until the round
    ends), so on a 2-core machine the clients take as little of the server's CPU as they can."""
    sent = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"prompt": "The ", "max_tokens": length, "temperature": 0.8, "seed": seed, "stream": True}).encode()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    parts, first = [], None
    while data := await reader.read(1 << 16):
        if first is None and b'"text": "' in data.replace(b'"text": ""', b""):
            first = time.perf_counter() - sent
        parts.append(data)
    writer.close()
    return b"".join(parts), first if first is not None else float("nan")


def characters(response: bytes) -> int:
    """The characters of text in a streamed response (chunked transfer encoding, then SSE)."""
    head, _, rest = response.partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0]
    if b" 200 " not in status:
        raise RuntimeError(f"the server answered {status!r}")
    body = bytearray()
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        size = int(size, 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    events = [e[len(b"data: ") :] for e in bytes(body).split(b"\n\n") if e.startswith(b"data: {")]
    return sum(len(json.loads(e)["choices"][0]["text"]) for e in events if json.loads(e)["choices"])


async def round_of(url: str, streams: int, length: int) -> tuple[float, list[float]]:
    port = int(url.rsplit(":", 1)[1])
    started = time.perf_counter()
    results = await asyncio.gather(*(one_stream(port, length, seed) for seed in range(streams)))
    seconds = time.perf_counter() - started
    chars = sum(characters(response) for response, _ in results)
    return chars / seconds, [t for _, t in results]


def measure(run: str | None, max_batch: int, length: int, rounds: int, weights: str = "fp32", engine=None) -> dict:
    out = {}
    with Running(run, max_batch, weights) as url:
        asyncio.run(round_of(url, 4, 20))  # warm up
        for streams in STREAMS:
            rates, firsts = [], []
            for _ in range(rounds):
                rate, ttfc = asyncio.run(round_of(url, streams, length))
                rates.append(rate)
                firsts += ttfc
            out[streams] = {"chars_per_s": statistics.median(rates), "ttfc_median_ms": 1000 * statistics.median(firsts)}
            if engine is not None:  # the server is idle now: the engine alone, the same rows
                out[streams]["engine_chars_per_s"] = engine_rate(engine, streams, length, rounds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="a run directory or .pt file (default: an untrained 1x512 model)")
    parser.add_argument("--length", type=int, default=200, help="characters per stream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--weights", default="fp32", choices=("fp32", "int8", "bf16"))
    parser.add_argument("--one-at-a-time", action="store_true", help="also the server with --max-batch 1")
    parser.add_argument("--engine-threads", type=int, help="torch threads for the in-process engine rows "
                        "[default: the server's, all cores but one]")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    from charlstm.serving.batcher import serving_threads

    torch.set_num_threads(args.engine_threads or serving_threads())
    model = served(args.run, args.weights)
    print(f"model: {model.description.get('architecture')}, weights {args.weights}, {args.length} chars per stream, "
          f"median of {args.rounds} rounds; engine rows on {torch.get_num_threads()} threads", file=sys.stderr)
    results = {"batched (--max-batch 64)": measure(args.run, 64, args.length, args.rounds, args.weights, engine=model)}
    if args.one_at_a_time:
        results["one at a time (--max-batch 1)"] = measure(args.run, 1, args.length, args.rounds, args.weights)
    print("| server | streams | served chars/s | engine chars/s | served/engine | time to first char, median |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        for streams, row in rows.items():
            engine = row.get("engine_chars_per_s")
            ratio = f"{row['chars_per_s'] / engine:.2f}" if engine else "-"
            print(f"| {name} | {streams} | {row['chars_per_s']:,.0f} | {f'{engine:,.0f}' if engine else '-'} | {ratio} | "
                  f"{row['ttfc_median_ms']:.0f} ms |")
    if args.json:
        write_json(args.json, {"machine": machine(), "length": args.length, "rounds": args.rounds, "weights": args.weights,
                               "results": {k: {str(s): v for s, v in r.items()} for k, r in results.items()}})


if __name__ == "__main__":
    main()
