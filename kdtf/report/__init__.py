"""The HTML report of a distillation run, and MAC/FLOP counts of Keras models.

```python
import kdtf.report
kdtf.report.build_report("runs/results/kd_mnist1d_mlp_s0.json", "runs/report")
kdtf.report.model_complexity(kdtf.models.get("resnet8x4"))["flops"]
```

`apps/report.py` is the command-line front end. The figures need matplotlib
(`pip install "kdtf[plots]"`); it is imported only when a report is drawn.
"""
from kdtf.report.build import build_report
from kdtf.report.build import load_results
from kdtf.report.build import locate_models
from kdtf.report.flops import LayerCount
from kdtf.report.flops import count_macs
from kdtf.report.flops import layer_macs
from kdtf.report.flops import model_complexity

__all__ = [
    "LayerCount",
    "build_report",
    "count_macs",
    "layer_macs",
    "load_results",
    "locate_models",
    "model_complexity",
]
