"""Benchmarks of wait-times: numbers printed and saved, never asserted (see docs/performance.md)."""
