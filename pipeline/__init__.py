"""The run pipeline behind the apps, beside the `kdtf` library.

`pipeline.experiment` turns one `RunConfig` into a run directory (teacher,
students, results JSON, export); `pipeline.export` exports and verifies a trained
student (`apps/export.py`); `pipeline.report` draws a run's HTML report.
It uses the library (`kdtf`) and is used by `studies/`, `benchmarks/` and
`apps/`; `kdtf` never imports it (tests/test_layering.py).
"""
