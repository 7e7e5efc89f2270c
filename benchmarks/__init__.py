"""Benchmarks of arc-video-serve (see benchmarks/README.md)."""
