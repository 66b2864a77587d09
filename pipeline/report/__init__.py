"""The HTML report of a distillation run, and MAC/FLOP counts of Keras models.

```python
import pipeline.report
pipeline.report.build_report("runs/results/kd_mnist1d_mlp_s0.json", "runs/report")
pipeline.report.model_complexity(kdtf.models.get("resnet8x4"))["flops"]
```

`apps/report.py` is the command-line front end. The figures need matplotlib
(`pip install "kdtf[plots]"`); it is imported only when a report is drawn.
"""
from pipeline.report.build import build_report
from pipeline.report.build import load_results
from pipeline.report.build import locate_models
from pipeline.report.flops import LayerCount
from pipeline.report.flops import count_macs
from pipeline.report.flops import layer_macs
from pipeline.report.flops import model_complexity

__all__ = [
    "LayerCount",
    "build_report",
    "count_macs",
    "layer_macs",
    "load_results",
    "locate_models",
    "model_complexity",
]
