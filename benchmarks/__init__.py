"""Benchmarks: each prints events/s, latency percentiles and memory beside a baseline."""
