"""Benchmarks. `python -m bench` (or `make bench`) runs every module here; each has a `main(argv)`."""
