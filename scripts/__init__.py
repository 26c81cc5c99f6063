"""Operator entry points: the `farmctl` CLI, dev run/test scripts and benchmarks."""
