"""Benchmarks: they print figures and never run in pytest (`make bench`)."""
