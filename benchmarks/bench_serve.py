"""``charlstm serve`` under concurrent streams: characters per second and time to first character.

Serves RUN (default: an untrained model of the default shape, 1 x 512 LSTM, char vocabulary of
the corpus; speed does not depend on training) with uvicorn on 127.0.0.1 in a process of its own, then
for 1, 4, 16 and 64 concurrent streams (each asks for --length characters at temperature 0.8)
measures, over --rounds rounds:

    chars/s     all streams' characters / the wall time until the last ends
    ttfc med    median time from sending a request to its first character
    speed-up    chars/s over the 1-stream figure of the same server

twice: the continuous batcher (--max-batch 64), and the same server generating one request at a
time (--max-batch 1; the others wait in the queue). The issue's goal, on a 2-core CPU: 16
streams >= 8 x the chars/s of one, and median time to first character < 100 ms at 16 streams.

    python benchmarks/bench_serve.py [RUN] [--length 200] [--rounds 3] [--json out.json]
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


def default_model() -> ServedModel:
    text, _ = corpus_text()
    tokenizer = CharTokenizer("".join(sorted(set(text))))
    torch.manual_seed(0)
    module = LanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size))  # the default shape
    config = module.config
    return ServedModel("default", module, tokenizer, torch.device("cpu"),
                       {"architecture": f"{config.cell} {config.num_layers}x{config.hidden_size}"})


def _serve(run: str | None, max_batch: int, port) -> None:
    """The server process: uvicorn on 127.0.0.1 (a free port, sent back through ``port``)."""
    import socket

    model = load_served(run, "cpu") if run else default_model()
    server = Server([model], Limits(max_batch=max_batch, max_queue=max(STREAMS)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port.send(sock.getsockname()[1])
    config = uvicorn.Config(server.app, log_config=None, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


class Running:
    """A server on 127.0.0.1 in a process of its own, so the clients measuring it (in this
    process) do not share its interpreter lock, as real clients would not."""

    def __init__(self, run: str | None, max_batch: int):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.port, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(run, max_batch, child), daemon=True)

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


async def one_stream(client: httpx.AsyncClient, length: int, seed: int) -> tuple[int, float]:
    """Characters received and seconds to the first of them."""
    sent = time.perf_counter()
    first = None
    chars = 0
    ask = {"prompt": "The ", "max_tokens": length, "temperature": 0.8, "seed": seed, "stream": True}
    async with client.stream("POST", "/v1/completions", json=ask) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            text = json.loads(line[6:])["choices"][0]["text"]
            if text and first is None:
                first = time.perf_counter() - sent
            chars += len(text)
    return chars, first if first is not None else float("nan")


async def round_of(url: str, streams: int, length: int) -> tuple[float, list[float]]:
    limits = httpx.Limits(max_connections=streams + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, length, seed) for seed in range(streams)))
        seconds = time.perf_counter() - started
    return sum(c for c, _ in results) / seconds, [t for _, t in results]


def measure(run: str | None, max_batch: int, length: int, rounds: int) -> dict:
    out = {}
    with Running(run, max_batch) as url:
        asyncio.run(round_of(url, 4, 20))  # warm up
        for streams in STREAMS:
            rates, firsts = [], []
            for _ in range(rounds):
                rate, ttfc = asyncio.run(round_of(url, streams, length))
                rates.append(rate)
                firsts += ttfc
            out[streams] = {"chars_per_s": statistics.median(rates), "ttfc_median_ms": 1000 * statistics.median(firsts)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="a run directory or .pt file (default: an untrained 1x512 model)")
    parser.add_argument("--length", type=int, default=200, help="characters per stream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    model = load_served(args.run, "cpu") if args.run else default_model()
    print(f"model: {model.description.get('architecture')}, {args.length} chars per stream, median of {args.rounds} rounds",
          file=sys.stderr)
    results = {
        "batched (--max-batch 64)": measure(args.run, 64, args.length, args.rounds),
        "one at a time (--max-batch 1)": measure(args.run, 1, args.length, args.rounds),
    }
    print("| server | streams | chars/s | speed-up | time to first char, median |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        single = rows[1]["chars_per_s"]
        for streams, row in rows.items():
            print(f"| {name} | {streams} | {row['chars_per_s']:,.0f} | {row['chars_per_s'] / single:.1f}x | "
                  f"{row['ttfc_median_ms']:.0f} ms |")
    if args.json:
        write_json(args.json, {"machine": machine(), "length": args.length, "rounds": args.rounds,
                               "results": {k: {str(s): v for s, v in r.items()} for k, r in results.items()}})


if __name__ == "__main__":
    main()
