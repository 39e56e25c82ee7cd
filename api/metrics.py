"""Prometheus exposition: DB-derived series read at scrape time, plus this process's SSE gauge.

Every series except `imagejobs_sse_subscribers` comes from the database, so it is the same on
every API instance (global): dashboards must not sum them across instances. The windowed
latency/failure series are gauge histograms / gauges over the last METRICS_WINDOW_S seconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool

from worker.core.store import fetch_dicts

LATENCY_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class SnapshotCollector(Collector):
    """Yields metric families built before the scrape (collect() cannot await the database)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def _histogram(name: str, doc: str, label: str, rows: list[dict[str, Any]]) -> Metric:
    family = GaugeHistogramMetricFamily(name, doc, labels=[label])
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_label[str(row["label"])].append(row)
    for value, buckets in sorted(by_label.items()):
        buckets.sort(key=lambda r: float(r["le"]))
        n = int(buckets[0]["n"])
        pairs = [(str(float(r["le"])), float(r["below"])) for r in buckets]
        pairs.append(("+Inf", float(n)))
        family.add_metric([value], pairs, gsum_value=float(buckets[0]["total"] or 0.0))
    return family


async def db_families(pool: AsyncConnectionPool, window_s: int) -> list[Metric]:
    windowed = {"window_s": window_s, "buckets": list(LATENCY_BUCKETS)}
    generations = GaugeMetricFamily(
        "imagejobs_generations",
        "Generations by status, provider and model (global, from the database)",
        labels=["status", "provider", "model"],
    )
    for row in await fetch_dicts(pool, "metrics_generations"):
        generations.add_metric([row["status"], row["provider"], row["model"]], float(row["n"]))

    depth = GaugeMetricFamily(
        "imagejobs_queue_depth", "Jobs waiting in each procrastinate queue", labels=["queue"]
    )
    oldest = GaugeMetricFamily(
        "imagejobs_queue_oldest_job_age_seconds",
        "Age of the oldest waiting job in each queue",
        labels=["queue"],
    )
    for row in await fetch_dicts(pool, "metrics_queues"):
        depth.add_metric([row["queue"]], float(row["depth"]))
        oldest.add_metric([row["queue"]], float(row["oldest_age_s"]))

    failures = GaugeMetricFamily(
        "imagejobs_generation_failures_window",
        "Generations failed in the window by provider and error_code "
        "(storage_error = upload failure, timeout = polling timeout)",
        labels=["provider", "error_code"],
    )
    for row in await fetch_dicts(pool, "metrics_failures", windowed):
        failures.add_metric([row["provider"], row["error_code"]], float(row["n"]))

    webhooks = GaugeMetricFamily(
        "imagejobs_webhook_deliveries_window",
        "Outgoing webhook delivery attempts in the window by outcome",
        labels=["outcome"],
    )
    for row in await fetch_dicts(pool, "metrics_webhooks", windowed):
        webhooks.add_metric([row["outcome"]], float(row["n"]))

    shutdowns = GaugeMetricFamily(
        "imagejobs_default_model_days_to_shutdown",
        "Days until each provider's default model shuts down (the models catalogue)",
        labels=["provider", "model", "status"],
    )
    for row in await fetch_dicts(pool, "metrics_model_shutdowns"):
        if row["days"] is not None:
            shutdowns.add_metric([row["provider"], row["model"], row["status"]], float(row["days"]))

    window = GaugeMetricFamily(
        "imagejobs_metrics_window_seconds", "Look-back window of the *_window series"
    )
    window.add_metric([], float(window_s))
    return [
        generations,
        depth,
        oldest,
        failures,
        webhooks,
        shutdowns,
        window,
        _histogram(
            "imagejobs_generation_duration_seconds",
            "Creation-to-finish latency of generations finished in the window",
            "provider",
            await fetch_dicts(pool, "metrics_end_to_end", windowed),
        ),
        _histogram(
            "imagejobs_step_duration_seconds",
            "Time spent in each step, for status events in the window",
            "step",
            await fetch_dicts(pool, "metrics_steps", windowed),
        ),
    ]


def render(families: list[Metric], sse_subscribers: int) -> bytes:
    sse = GaugeMetricFamily(
        "imagejobs_sse_subscribers", "Open SSE streams on this API process (per instance)"
    )
    sse.add_metric([], float(sse_subscribers))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector([*families, sse]))
    return generate_latest(registry)
