"""The server's Prometheus metrics (``GET /metrics``), in a registry of its own so that two
servers in one process (the tests) do not share counts."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_FIRST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "charlstm_requests", "HTTP requests answered, by path and status", ["path", "status"], registry=self.registry
        )
        self.tokens = Counter(
            "charlstm_tokens_generated", "Tokens generated, by model", ["model"], registry=self.registry
        )
        self.prompt_tokens = Counter(
            "charlstm_prompt_tokens", "Prompt tokens read, by model", ["model"], registry=self.registry
        )
        self.waiting = Gauge("charlstm_queue_depth", "Generations waiting for a place in the batch", registry=self.registry)
        self.running = Gauge("charlstm_running", "Generations in the batch now", registry=self.registry)
        self.first = Histogram(
            "charlstm_time_to_first_token_seconds",
            "From a generation's arrival to its first token",
            buckets=_FIRST_BUCKETS,
            registry=self.registry,
        )
        self.per_token = Histogram(
            "charlstm_token_latency_seconds",
            "Time of one batched step: the time between a generation's tokens",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    # Called by the batcher, from its thread (prometheus_client's metrics are thread-safe).
    def first_token(self, seconds: float) -> None:
        self.first.observe(seconds)

    def step(self, seconds: float, tokens: int, model: str) -> None:
        self.per_token.observe(seconds)
        self.tokens.labels(model).inc(tokens)

    def depth(self, waiting: int, running: int) -> None:
        self.waiting.set(waiting)
        self.running.set(running)

    def request(self, path: str, status: int) -> None:
        self.requests.labels(path, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
