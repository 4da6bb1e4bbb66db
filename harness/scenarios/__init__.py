"""Scenarios: the accuracy pass, single-stream latency and offline throughput of one model variant."""
