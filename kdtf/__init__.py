"""kdtf: knowledge distillation for Keras 3 and TensorFlow.

Public API:
- `kdtf.Distiller`: a `keras.Model` that trains a student from a teacher.
- `kdtf.StagewiseDistiller`: SSKD, stage-by-stage backbone mimicking, then the head.
- `kdtf.heads`: categorical and Gaussian output heads; `kdtf.adapters`: feature adapters.
- `kdtf.methods`: the method registry: every method with its loss, its settings and how
  a run builds it (`kdtf.methods.REGISTRY`; `--method=<name>` in the apps).
- `kdtf.losses`: every distillation loss, `loss(teacher_outputs, student_outputs)`, one file
  each: `kdtf/losses/<name>.py` for kd, dist, dkd (logit standardization: an option of
  these three, `logit_standardization.py`), at, rkd, pkt, crd, reviewkd; FitNets is
  `feature.py` (`FeatureMSE`), extracurricular learning `distribution.py` plus
  `kdtf.samplers`, SSKD `kdtf/stagewise.py`.
- `kdtf.optimizers`: the runs' optimizer (cosine-decayed Adam); `kdtf.atomic`: atomic file writes.
- `kdtf.samplers`: TFP-modelled synthetic inputs (extracurricular learning).
- `kdtf.models`, `kdtf.data`, `kdtf.metrics`, `kdtf.export`, `kdtf.callbacks`.
- `kdtf.caching`: teacher outputs computed once (fixed data or K augmented views);
  `kdtf.batches`: the batch format (inputs plus cached outputs or example indices).
- `kdtf.augmentation`: image augmentation on the device, inside the train step.
- `kdtf.distribute`: strategies for a run (mirrored, multi-worker) and who writes files.

The run pipeline (`pipeline/`), the studies behind `results/` (`studies/`), the
benchmarks (`benchmarks/`) and the apps (`apps/`) live beside the library in
its source tree; their old names here (`kdtf.experiment`, `kdtf.report`,
`kdtf.studies`, `kdtf.regression`, `kdtf.benchmark`) still work for one
release, with a DeprecationWarning (`kdtf._moved`).

Other submodules load on first use. `import kdtf` imports Keras and registers
every kdtf class that a `.keras` file may hold, so `keras.saving.load_model`
rebuilds a saved `Distiller`, loss or sampler in a fresh process.
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "adapters", "atomic", "augmentation", "batches", "caching", "callbacks", "cli", "data", "distribute",
    "export", "heads", "losses", "methods", "metrics", "models", "optimizers", "samplers", "stagewise",
)
# Old names of the modules that moved beside the library (kdtf._moved.MOVED):
# they still load, with a DeprecationWarning, and are left out of dir(kdtf).
_MOVED = ("kdtf.experiment", "kdtf.report", "kdtf.studies", "kdtf.regression", "kdtf.benchmark")
_ATTRIBUTES = {"Distiller": "kdtf.distiller", "StagewiseDistiller": "kdtf.stagewise"}

# Modules that register Keras-serializable classes: imported before a .keras
# file is loaded so that every kdtf object in it can be rebuilt.
SERIALIZABLE_MODULES = ("kdtf.distiller", "kdtf.losses", "kdtf.samplers", "kdtf.models", "kdtf.data",
                        "kdtf.metrics", "kdtf.heads", "kdtf.adapters", "kdtf.caching",
                        "kdtf.augmentation")


def register_all():
    """Imports every kdtf module that registers Keras-serializable classes.

    On a machine without TensorFlow (Keras on JAX), the modules that need it
    (`kdtf.caching`) are left out; everything else registers.
    """
    for name in SERIALIZABLE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("tensorflow"):
                raise


def __getattr__(name):  # noqa: E302
    if f"kdtf.{name}" in _MOVED:  # deprecated: moved out of the library (kdtf._moved)
        module = importlib.import_module("kdtf._moved").alias(f"kdtf.{name}")
        globals()[name] = module
        return module
    if name in _SUBMODULES:
        return importlib.import_module(f"kdtf.{name}")
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'kdtf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES) + list(_ATTRIBUTES))


# TensorFlow's start-up noise (oneDNN, CUDA-not-found, absl pre-init lines) is
# dropped when kdtf is imported first; `TF_CPP_MIN_LOG_LEVEL` set by the user wins.
importlib.import_module("kdtf.cli").quiet_tensorflow()
register_all()
