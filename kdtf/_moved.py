"""Old names of modules that moved out of the library, kept for one release.

The run pipeline, the studies behind `results/` and the benchmark left `kdtf/`
for the source tree beside it (`pipeline/`, `studies/`, `benchmarks/`): the
library holds mechanisms only. `import kdtf.experiment`, `kdtf.experiment`
as an attribute, `import kdtf.studies.soak` and `python -m kdtf.studies.soak`
still work, with a DeprecationWarning, and give the new modules themselves
(not copies), so their state is shared between the two names.

The new modules live in kdtf's source tree, beside the `kdtf` package, which
an editable install (`pip install -e .`, the README's) or a checkout provides;
an installed wheel ships the library only, and the old names then say where
the modules went.

`MOVED` is the one list of these names; `tests/test_layering.py` checks that
the shim files hold nothing but `alias(__name__)`, and that no other library
module imports the layers above it.
"""
import importlib
import importlib.abc
import importlib.util
import os
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
# The source tree's root: the folder that holds kdtf/ and the layers beside it.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def new_name(old):
    """The new name of `old` or of a module inside an old package, else None."""
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before):]
    return None


def alias(old):
    """Makes the module named `old` the module it moved to, with a warning.

    Args:
        old: the old module name, in `MOVED` or inside one of its packages
            (a shim passes `__name__`).

    Returns:
        The new module.

    Raises:
        ImportError: the new module is not importable (kdtf installed from a
            wheel, which ships the library only); the message says where the
            module lives now.
    """
    new = new_name(old)
    _warn(old, new)
    top = new.split(".")[0]
    if os.path.isdir(os.path.join(_ROOT, top)) and _ROOT not in sys.path:
        sys.path.append(_ROOT)  # an editable install exposes only the kdtf package
    try:
        module = importlib.import_module(new)
    except ModuleNotFoundError as error:
        if error.name != top:
            raise
        raise ImportError(f"{old} moved to {new}, which is part of kdtf's source tree, not of the "
                          "installed library: install kdtf from a checkout (pip install -e .) or "
                          "run from one.") from error
    sys.modules[old] = module
    _install_finder()
    return module


def _warn(old, new):
    warnings.warn(f"{old} moved to {new} (beside the kdtf library, in its source tree); "
                  "the old name goes in the next release.", DeprecationWarning,
                  stacklevel=_caller_level())


def _caller_level():
    """`warnings.warn`'s stacklevel of the first frame outside kdtf and importlib.

    `warnings.warn` itself skips importlib's bootstrap frames without counting
    them; the other frames of kdtf and of `importlib.import_module` count.
    """
    level, frame = 1, sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if "importlib" in name and "_bootstrap" in name:
            frame = frame.f_back
            continue
        if not (name.startswith(os.path.dirname(__file__)) or os.sep + "importlib" + os.sep in name):
            return level
        frame, level = frame.f_back, level + 1
    return 2


class _Loader(importlib.abc.Loader):
    """Loads an old name as the new module itself (`python -m` gets its code)."""

    def create_module(self, spec):
        return alias(spec.name)

    def exec_module(self, module):
        pass

    def get_code(self, fullname):  # for runpy (`python -m kdtf.studies.soak`)
        new = new_name(fullname)
        _warn(fullname, new)
        return importlib.util.find_spec(new).loader.get_code(new)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the modules inside a moved package under their old names."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED or new_name(fullname) is None:
            return None
        new = importlib.util.find_spec(new_name(fullname))
        if new is None:
            return None
        # The new file as the origin: `python -m` puts it in sys.argv[0].
        return importlib.util.spec_from_loader(fullname, _Loader(), origin=new.origin)


def _install_finder():
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
