"""Benchmarks of backup-sidecar against the seed's method and its peers (not tests)."""
