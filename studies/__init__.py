"""Reproducible studies behind the tables in `results/`, beside the `kdtf` library.

Each module is run as `python -m studies.<name>` from the repository root and
writes its table; they use `kdtf` and `pipeline`, and nothing imports them.
"""
