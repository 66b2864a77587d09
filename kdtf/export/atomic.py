"""Deprecated location of `kdtf.atomic` (atomic file writing), kept for one release."""
import warnings

from kdtf.atomic import *  # noqa: F401,F403
from kdtf.atomic import _commit, _fsync_dir, _fsync_file, _fsync_path, _remove  # noqa: F401

warnings.warn("kdtf.export.atomic moved to kdtf.atomic; the old name goes in the next release.",
              DeprecationWarning, stacklevel=2)
