"""Prometheus metrics of a running backfill (--metrics-port), fed by the same events as the
console. Served from the supervisor process on loopback unless told otherwise."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pipeline.errors import ConfigError
from pipeline.messages import (
    Attempt,
    Checked,
    ConcurrencyChanged,
    EndpointState,
    EndpointStatus,
    Event,
    Progress,
    RunStarted,
    TaskWritten,
)

# Requests range from a few ms (a local node) to the 30 s+ timeouts of a struggling provider.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The run's metrics in their own registry; call it with run events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        per_endpoint = {"labelnames": ["endpoint"], "registry": self.registry}
        self.requests = Counter("backfill_requests", "JSON-RPC requests sent", **per_endpoint)
        self.failures = Counter(
            "backfill_request_failures",
            "Failed requests by error class",
            labelnames=["endpoint", "error_class"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "backfill_request_latency_seconds",
            "Request latency, failures included",
            buckets=LATENCY_BUCKETS,
            **per_endpoint,
        )
        self.tasks = Counter("backfill_tasks", "Tasks fetched and stored", **per_endpoint)
        self.logs = Counter("backfill_logs", "Logs fetched and stored", **per_endpoint)
        self.parser_fallbacks = Counter(
            "backfill_parser_fallbacks",
            "Answers the fast parser refused and the careful (slower) one read",
            **per_endpoint,
        )
        self.backoff = Gauge(
            "backfill_backoff_seconds",
            "The pause the endpoint is in now (backoff, throttle or circuit cool-down); 0 when "
            "active",
            **per_endpoint,
        )
        self.state = Gauge(
            "backfill_endpoint_state",
            "1 for the state the endpoint is in",
            labelnames=["endpoint", "state"],
            registry=self.registry,
        )
        self.concurrency = Gauge(
            "backfill_endpoint_concurrency",
            "Requests the endpoint may have in flight now (adaptive unless --concurrency pins it)",
            **per_endpoint,
        )
        self.blocks_done = Gauge("backfill_blocks_done", "Blocks stored", registry=self.registry)
        self.blocks_total = Gauge(
            "backfill_blocks_total", "Blocks in the run's range", registry=self.registry
        )
        self.queue_depth = Gauge("backfill_queue_depth", "Tasks waiting", registry=self.registry)
        self.in_flight = Gauge("backfill_tasks_in_flight", "Tasks leased", registry=self.registry)
        self.rows = Counter("backfill_rows_written", "Rows stored", registry=self.registry)

    def __call__(self, event: Event) -> None:
        """Count one run event; events the metrics do not follow are ignored."""
        match event:
            case Attempt():
                self._attempt(event)
            case TaskWritten():
                self.tasks.labels(event.endpoint).inc()
                self.logs.labels(event.endpoint).inc(event.logs)
                self.rows.inc(event.logs)
                self.blocks_done.inc(event.task.blocks)
            case EndpointState():
                self.backoff.labels(event.endpoint).set(event.pause_s)
                self._set_state(event.endpoint, event.state)
            case ConcurrencyChanged():
                self.concurrency.labels(event.endpoint).set(event.limit)
            case Progress():  # blocks and rows follow TaskWritten, as they happen
                self.queue_depth.set(event.queued_tasks)
                self.in_flight.set(event.tasks_in_flight)
            case RunStarted():
                self._start(event)
            case Checked(error=kind) if kind is not None:  # a request of the checks failed
                self.failures.labels(event.endpoint, str(kind)).inc()

    def _attempt(self, event: Attempt) -> None:
        self.requests.labels(event.endpoint).inc()
        self.latency.labels(event.endpoint).observe(event.latency_ms / 1000)
        if event.parser_fallback:
            self.parser_fallbacks.labels(event.endpoint).inc()
        if not event.ok:
            self.failures.labels(event.endpoint, str(event.error_kind)).inc()

    def _start(self, event: RunStarted) -> None:
        total = event.to_block - event.from_block + 1
        self.blocks_total.set(total)
        self.blocks_done.set(total - event.todo_blocks)
        for name in event.endpoints:
            # Every series exists from the start: rate() and absent() work from the first scrape.
            metrics = (
                self.requests, self.tasks, self.logs, self.latency, self.backoff,
                self.parser_fallbacks,
            )  # fmt: skip
            for metric in metrics:
                metric.labels(name)
            self._set_state(name, EndpointStatus.ACTIVE)

    def _set_state(self, endpoint: str, current: EndpointStatus) -> None:
        for state in EndpointStatus:
            self.state.labels(endpoint, state).set(state is current)


class MetricsServer:
    """Serves a Metrics registry over HTTP for the length of a `with` block."""

    def __init__(self, metrics: Metrics, port: int, host: str = "127.0.0.1") -> None:
        self.metrics, self.port, self.host = metrics, port, host
        self.server = None

    def __enter__(self) -> MetricsServer:
        try:
            self.server, _ = start_http_server(self.port, self.host, self.metrics.registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port} ({exc.strerror or exc}): "
                "choose another --metrics-port"
            ) from None
        self.port = self.server.server_address[1]  # the real one when asked for port 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
