"""Old names of modules that moved out of the library, kept for one release.

The run pipeline, the studies behind `results/` and the benchmark left `kdtf/`
for the source tree beside it (`pipeline/`, `studies/`, `benchmarks/`): the
library holds mechanisms only. `import kdtf.experiment` still works, with a
DeprecationWarning, and gives the new module itself (not a copy), so state
such as `RunConfig` is shared between the two names.

`MOVED` is the one list of these names; `tests/test_layering.py` checks that
the shim files hold nothing but `alias(__name__)`, and that no other library
module imports the layers above it.
"""
import importlib
import sys
import warnings

# old name -> new name
MOVED = {
    "kdtf.experiment": "pipeline.experiment",
    "kdtf.report": "pipeline.report",
    "kdtf.studies": "studies",
    "kdtf.regression": "studies.regression",
    "kdtf.benchmark": "benchmarks.benchmark",
}


def alias(old):
    """Makes the module named `old` the module it moved to, with a warning.

    Args:
        old: the old module name, a key of `MOVED` (a shim passes `__name__`).

    Returns:
        The new module.

    Raises:
        ImportError: the new module is not importable, e.g. kdtf was installed
            from a wheel, which ships the library only; the message says where
            the module lives now.
    """
    new = MOVED[old]
    warnings.warn(f"{old} moved to {new} (beside the kdtf library, in its source tree); "
                  "the old name goes in the next release.", DeprecationWarning, stacklevel=3)
    try:
        module = importlib.import_module(new)
    except ModuleNotFoundError as error:
        if error.name != new.split(".")[0]:
            raise
        raise ImportError(f"{old} moved to {new}, which is part of kdtf's source tree, not of the "
                          "installed library: run from a checkout of kdtf (its root on sys.path, as "
                          "the apps do).") from error
    sys.modules[old] = module
    return module
