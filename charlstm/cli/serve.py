"""``charlstm serve``: models behind an OpenAI-compatible HTTP API, with a page at ``/``."""

from __future__ import annotations

import ipaddress
import sys

import click

from charlstm.cli.base import cli, config_option, device_option, runs_argument
from charlstm.config import SampleConfig
from charlstm.errors import CharlstmError, ConfigError

_EXTRA = 'charlstm serve needs the web packages: pip install "charlstm[serve]"'


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


@cli.command()
@runs_argument
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; any but loopback needs --api-key.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option(
    "--api-key",
    envvar="CHARLSTM_API_KEY",
    help="Answer only requests with 'Authorization: Bearer KEY' (/, /page.js, /health and /openapi.json "
    "stay open)  [env: CHARLSTM_API_KEY]",
)
@click.option("--cors-origin", multiple=True, help="Let pages from this origin call the API (repeatable); off by default.")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1), help="Generations stepped together.")
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(0), help="Generations waiting; more get 503.")
@click.option("--max-tokens", default=4096, show_default=True, type=click.IntRange(1), help="The most max_tokens a request may ask.")
@click.option("--max-prompt-chars", default=32_768, show_default=True, type=click.IntRange(1), help="Longest prompt.")
@click.option("--max-n", default=8, show_default=True, type=click.IntRange(1), help="Most choices per request.")
@click.option("--max-body-bytes", default=1 << 20, show_default=True, type=click.IntRange(1), help="Largest request body.")
@click.option(
    "--time-limit", default=120.0, show_default=True, type=click.FloatRange(0, min_open=True),
    help="Seconds one generation may run (then finish_reason is time_limit).",
)
@click.option(
    "--shutdown-timeout", default=5.0, show_default=True, type=click.FloatRange(0),
    help="On SIGINT/SIGTERM, seconds running streams get to end.",
)
@click.option(
    "--chat-template", default="plain", show_default=True, metavar="FILE|plain|chatml",
    help="How /v1/chat/completions writes messages out as a transcript: a Jinja chat template file "
    "(as transformers, vLLM and llama.cpp read them), or a built-in one.",
)
@device_option
@config_option(SampleConfig, "weights")
def serve(runs, host, port, api_key, cors_origin, chat_template, device, weights, shutdown_timeout, **limits) -> None:
    """Serve RUNs over HTTP: OpenAI-compatible /v1/completions and /v1/chat/completions (streamed
    with "stream": true), /v1/models, /v1/score, vLLM's /tokenize, /detokenize and
    /tokenizer_info, /health, /metrics, and a page to write with at /. Listens on 127.0.0.1
    unless --host says otherwise. See docs/serving.md.

    RUN: a run directory, a checkpoint file or an exported folder.
    """
    uvicorn = _serving_extra()
    template = _checked_options(runs, host, api_key, chat_template)
    from charlstm.serving.app import Server
    from charlstm.serving.models import load_served
    from charlstm.serving.requests import Limits

    log = _log()
    failed: list[BaseException] = []

    def on_load_error(error: BaseException) -> None:
        failed.append(error)
        server.should_exit = True

    state = Server(
        lambda: [load_served(run, device, weights=weights or "fp32") for run in runs],
        Limits(**limits),
        api_key=api_key,
        cors_origins=cors_origin,
        on_load_error=on_load_error,
        chat_template=template,
    )
    import torch

    from charlstm.serving.batcher import serving_threads

    torch.set_num_threads(serving_threads())
    server = _uvicorn_server(uvicorn, state, log, host=host, port=port, shutdown_timeout=shutdown_timeout)
    server.run()
    if failed:
        raise CharlstmError(str(failed[0]))
    if not server.started:
        raise CharlstmError(f"could not listen on {host}:{port} (in use, or not an address of this machine)")


def _serving_extra():
    """The ``serve`` extra's modules are there (uvicorn, returned), or one line that says how to get them."""
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise CharlstmError(_EXTRA) from None
    return uvicorn


def _checked_options(runs, host: str, api_key: str | None, chat_template: str | None):
    """What would fail once the server is up fails now, in one line: a key the address needs,
    an empty key, a run that is not there, a bad chat template (returned, read)."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(
            f"--host {host} is not a loopback address: set --api-key (or CHARLSTM_API_KEY) so only clients with the key are answered"
        )
    if api_key is not None and not api_key.strip():
        raise ConfigError("--api-key must not be empty")
    from charlstm.runs.checkpoint import find_checkpoint

    for run in runs:
        find_checkpoint(run)
    from charlstm.generation.template import ChatTemplate

    return ChatTemplate.named(chat_template)


def _log():
    """The server's log: one line per event on stderr, with the time."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger("charlstm.serve")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _uvicorn_server(uvicorn, state, log, *, host: str, port: int, shutdown_timeout: float):
    """uvicorn serving ``state``'s app, except that a signal ends it with exit status 0 once
    running streams have ended (uvicorn itself raises the signal again after its graceful
    shutdown), and the address it listens on is logged."""

    class _Uvicorn(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            state.batcher.accepting = False
            if self.should_exit:
                self.force_exit = True  # a second signal: stop now
            else:
                log.info("stopping: no new requests; running streams get %g s to end", shutdown_timeout)
                self.should_exit = True

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            for s in self.servers:
                for sock in s.sockets:
                    address = sock.getsockname()
                    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
                    log.info("listening on http://%s:%d (Ctrl-C stops)", shown, address[1])

    config = uvicorn.Config(
        state.app,
        host=host,
        port=port,
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=shutdown_timeout,
        lifespan="on",
    )
    return _Uvicorn(config)
