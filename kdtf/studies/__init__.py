"""Reproducible result studies behind the tables in `results/`."""
