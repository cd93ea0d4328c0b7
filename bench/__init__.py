"""Benchmarks of the toolkit (speed, size, deployed accuracy); run as modules from the
repository root, e.g. ``python -m bench.tflite_latency --help``. Not part of the wheel."""
