"""Metrics: pure functions of an original and a reconstruction."""
