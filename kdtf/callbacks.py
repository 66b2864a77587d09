"""Callbacks for distillation runs."""
import math

import keras


class NonFiniteLossError(RuntimeError):
    """Raised when a training step produced a NaN or infinite loss."""


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training with an error at the first non-finite loss.

    Unlike `keras.callbacks.TerminateOnNaN`, it raises `NonFiniteLossError`
    from `on_train_batch_end`, so `on_epoch_end` callbacks (checkpoints, model
    exports) never run on the damaged state, and the message names the epoch
    and step and the loss terms that were not finite. `Distiller.fit` adds it
    as the first callback.

    Example:
    >>> model.fit(ds, callbacks=[kdtf.callbacks.NonFiniteGuard()])
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = {
            k: v
            for k, v in logs.items()
            if "loss" in k and _is_number(v) and not math.isfinite(float(v))
        }
        if not bad:
            return
        self.model.stop_training = True
        terms = ", ".join(f"{k}={float(v)}" for k, v in sorted(logs.items()) if _is_number(v))
        raise NonFiniteLossError(
            f"Non-finite loss at epoch {self._epoch + 1}, step {batch + 1} "
            f"({terms}). Training stopped before any checkpoint or export "
            "was written for this step, and the update of the bad step was "
            "skipped. Check the inputs and labels for NaN/Inf "
            "(kdtf.data.validate_arrays), or lower the learning rate."
        )


def _is_number(v):
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
