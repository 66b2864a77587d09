"""Workarounds for two upstream leaks that grow memory in long runs.

Both were found with the soak test (`python -m studies.soak`, issue 8),
each reproduced in a few lines on TensorFlow 2.21 / Keras 3.15:

1. TensorFlow's eager runtime caches the tensor it makes for every distinct
   Python scalar it is given (`TFE_TensorHandleCache`) and never evicts an
   entry (tensorflow/tensorflow#68196; a size cap was proposed in PR #109357
   and not merged). Every `tf.summary.scalar(..., step=i)` with a new step
   adds an entry, so per-step TensorBoard logging grows memory by about
   2.4 KB per write: `keras.callbacks.TensorBoard(update_freq=1)` and a
   learning-rate logger over 1650 short epochs cost 160 MiB.
   `clear_scalar_cache` empties the cache; the next conversion of a value
   simply makes its tensor again.
2. Keras 3.15's `saving_lib.get_attr_skipset` stores the attribute sets it
   computes under `saving_attr_skipset_<type>` but looks them up under
   `saving_attr_skiplist_<type>`, so the lookup never hits and every
   `save_weights` / `save` builds throwaway reference objects, a
   `keras.optimizers.Optimizer(1.0)` among them. On TensorFlow each of those
   leaks about 70 KiB (its variables), so a per-epoch backup grew memory by
   70-150 KiB per epoch. `share_saving_skipsets` stores the sets computed so
   far under the name the lookup uses.

`kdtf.callbacks.LeakGuard` applies both during `fit` (the `Distiller` adds
it), and kdtf's own save paths call `share_saving_skipsets` after saving.
Both functions are no-ops when there is nothing to fix (another backend, a
fixed release).

`PeakMemory` measures what these fix: the process's resident set and its
peak (and a JAX GPU's peak bytes), for the benchmark, the soak and
`kdtf.callbacks.MemoryLogger`.
"""
import sys

import keras

_COMPUTED = "saving_attr_skipset_"  # the name Keras 3.15 stores under
_LOOKED_UP = "saving_attr_skiplist_"  # the name it looks up


def clear_scalar_cache():
    """Empties TensorFlow's eager cache of tensors made from Python scalars.

    Returns:
        True if a cache was cleared, False on other backends or a
        TensorFlow without the cache.

    Example:
    >>> kdtf.backend.memory.clear_scalar_cache()
    True
    """
    if keras.backend.backend() != "tensorflow":
        return False
    try:
        from tensorflow.python import pywrap_tfe
    except ImportError:  # pragma: no cover - TensorFlow layout changed
        return False
    clear = getattr(pywrap_tfe, "TFE_ClearScalarCache", None)
    if clear is None:  # pragma: no cover
        return False
    clear()
    return True


def share_saving_skipsets():
    """Makes Keras reuse the attribute skip-sets it computed while saving.

    Call after a `save` or `save_weights`; later saves in this thread then
    build no reference objects.

    Returns:
        The number of skip-sets newly made visible to Keras's lookup.

    Example:
    >>> model.save_weights("a.weights.h5")
    >>> kdtf.backend.memory.share_saving_skipsets()
    5
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - Keras layout changed
        return 0
    tracker = getattr(global_state, "GLOBAL_STATE_TRACKER", None)
    if tracker is None:  # pragma: no cover
        return 0
    shared = 0
    for name, value in list(vars(tracker).items()):
        if not name.startswith(_COMPUTED) or value is None:
            continue
        alias = _LOOKED_UP + name[len(_COMPUTED):]
        if global_state.get_global_attribute(alias) is None:
            global_state.set_global_attribute(alias, value)
            shared += 1
    return shared


class PeakMemory:
    """Peak RSS of this process over a timed call (and JAX GPU peak bytes)."""

    def __init__(self):
        self.resettable = self._try_reset()

    @staticmethod
    def _try_reset():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            return True
        except OSError:
            return False

    def reset(self):
        """Resets the peak (where possible); returns the current RSS in MiB."""
        if self.resettable:
            self._try_reset()
        return self.rss_mib()

    @staticmethod
    def rss_mib():
        """The resident set size in MiB (None where /proc is not there)."""
        return _proc_status_mib("VmRSS")

    @staticmethod
    def rss_peak_mib():
        """The peak resident set size in MiB since the last `reset`."""
        peak = _proc_status_mib("VmHWM")
        if peak is not None:
            return peak
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)

    @staticmethod
    def device_peak_mib():
        import keras

        if keras.backend.backend() != "jax":
            return None
        try:
            import jax

            device = jax.devices()[0]
            if device.platform == "cpu":
                return None
            stats = device.memory_stats() or {}
            peak = stats.get("peak_bytes_in_use")
            return None if peak is None else peak / 2**20
        except Exception:  # pragma: no cover
            return None

    def describe(self):
        how = ("peak RSS of the whole process during the timed call (VmHWM, reset before each "
               "call; max over rounds), and its growth over the RSS at the start of the call"
               if self.resettable else "peak RSS of the process so far (ru_maxrss; not resettable here)")
        return how


def _proc_status_mib(key):
    """A `kB` field of /proc/self/status (e.g. "VmRSS") in MiB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
