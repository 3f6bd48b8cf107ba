"""Benchmarks: each written once against the Sandbox interface, run unchanged everywhere."""
