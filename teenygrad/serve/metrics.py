"""Prometheus metrics of the server, in a registry of their own (several servers may live in one process)."""
from __future__ import annotations


class Metrics:
  """Counters, histograms and gauges that GET /metrics exposes."""
  def __init__(self):
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    self.registry = CollectorRegistry()
    r = self.registry
    self.requests = Counter("teenygrad_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
    self.prompt_tokens = Counter("teenygrad_prompt_tokens", "prompt tokens received", registry=r)
    self.prefix_tokens = Counter("teenygrad_prefix_cache_tokens", "prompt tokens found in the shared-prefix cache", registry=r)
    self.generated_tokens = Counter("teenygrad_generated_tokens", "tokens generated", registry=r)
    latency = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
    self.time_to_first_token = Histogram("teenygrad_time_to_first_token_seconds", "from arrival to the first token", buckets=latency, registry=r)
    self.time_per_token = Histogram("teenygrad_time_per_output_token_seconds", "duration of one decode step", buckets=latency, registry=r)
    self.queue_depth = Gauge("teenygrad_queue_depth", "sequences waiting for a batch slot", registry=r)
    self.running = Gauge("teenygrad_running_batch_size", "sequences in the running batch", registry=r)
    self.kv_usage = Gauge("teenygrad_kv_cache_usage_ratio", "fraction of the paged KV cache's blocks in use", registry=r)

  def render(self) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    return generate_latest(self.registry), CONTENT_TYPE_LATEST
