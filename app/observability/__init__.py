"""Prometheus metrics: the web process's (`web`), the broker's queues (`queues`).

The worker side (job metrics, the worker exporter) lives in `workers/metrics.py`.
"""
