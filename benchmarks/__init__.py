"""Benchmarks of the forwarding function, each run beside its baselines."""
