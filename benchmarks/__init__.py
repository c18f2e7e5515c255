"""Benchmarks; run them from the repository root (see benchmarks/README.md)."""
