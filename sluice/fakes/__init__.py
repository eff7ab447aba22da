"""Fake sources for the demo, the tests and the benchmarks; never imported by production code."""
