"""Callbacks for distillation runs."""
import json
import math
import os
import shutil
import sys

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
            "was written for this step. Check the inputs and labels for NaN/Inf "
            "(kdtf.data.validate_arrays), or lower the learning rate."
        )


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
    return value


def _is_number(v):
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


class LeakGuard(keras.callbacks.Callback):
    """Keeps a long `fit` from growing memory through two upstream leaks.

    TensorFlow never evicts the tensors it caches for Python scalars (every
    per-step TensorBoard write adds one), and Keras 3.15 builds throwaway
    objects, which leak on TensorFlow, on every save; see
    `kdtf.backend.memory`. This callback empties the scalar cache every
    `every_n_steps` steps and after every epoch, and lets Keras reuse what
    it computed for earlier saves. `Distiller.fit` adds it; add it yourself
    to `fit` calls of plain Keras models in long runs. It costs one cache
    clear per call (microseconds) and changes no result.

    Args:
        every_n_steps: also clear within an epoch every this many steps
            (int >= 1), for epochs of many steps.

    Example:
    >>> model.fit(ds, epochs=1000, callbacks=[
    ...     keras.callbacks.TensorBoard("logs", update_freq=1),
    ...     kdtf.callbacks.LeakGuard()])
    """

    def __init__(self, every_n_steps=1000):
        super().__init__()
        self.every_n_steps = _check_positive_int("every_n_steps", every_n_steps)
        self._steps = 0

    @staticmethod
    def _release():
        from kdtf.backend import memory

        memory.clear_scalar_cache()
        memory.share_saving_skipsets()

    # A `*_batch_end` hook would make Keras call the callbacks synchronously
    # on backends that dispatch them on a thread (JAX): count at batch begin.
    def on_train_batch_begin(self, batch, logs=None):
        if self._steps and self._steps % self.every_n_steps == 0:
            self._release()
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        self._release()

    def on_train_end(self, logs=None):
        self._release()


class BackupAndRestore(keras.callbacks.Callback):
    """Resumable training: an atomic backup after every epoch.

    Like `keras.callbacks.BackupAndRestore`, but a crash (even SIGKILL) at any
    moment leaves a complete backup: each epoch's weights (model, optimizer,
    seed generators, samplers) and metadata are written to a fresh
    directory, then a one-line pointer file is replaced atomically
    (`os.replace`), and only then are older backups deleted. A backup made
    by a run with other settings (a different `fingerprint`) is never
    restored: that is an error naming the directory.

    Args:
        backup_dir: directory of the backups (created as needed).
        fingerprint: a string identifying the run's settings, stored with
            the backup and checked on restore. None skips the check.
        delete_checkpoint: delete the backups when training ends normally.

    Example:

    >>> model.fit(ds, epochs=10, callbacks=[
    ...     kdtf.callbacks.BackupAndRestore("runs/kd/backup", fingerprint="abc")])
    """

    _POINTER = "latest"

    def __init__(self, backup_dir, fingerprint=None, delete_checkpoint=True):
        super().__init__()
        if not isinstance(backup_dir, str) or not backup_dir:
            raise ValueError(f"`backup_dir` must be a non-empty path; got {backup_dir!r}.")
        self.backup_dir = backup_dir
        self.fingerprint = fingerprint
        self.delete_checkpoint = delete_checkpoint
        self.restored_epoch = 0

    def _latest(self):
        pointer = os.path.join(self.backup_dir, self._POINTER)
        if not os.path.exists(pointer):
            return None
        with open(pointer) as f:
            name = f.read().strip()
        path = os.path.join(self.backup_dir, name)
        if not name or not os.path.isdir(path):
            raise ValueError(
                f"backup_dir {self.backup_dir!r}: the pointer names {name!r}, which is "
                "missing; delete the directory to start over."
            )
        return path

    def on_train_begin(self, logs=None):
        path = self._latest()
        if path is None:
            return
        with open(os.path.join(path, "metadata.json")) as f:
            meta = json.load(f)
        if self.fingerprint is not None and meta.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"backup_dir {self.backup_dir!r} holds a backup of a run with other "
                "settings; rerun with the same flags, or delete the directory to start over."
            )
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(path, "state.weights.h5"))
        _restore_seed_states(model, os.path.join(path, _SEEDS))
        self.restored_epoch = int(meta["epoch"])
        model._initial_epoch = self.restored_epoch
        print(f"[kdtf] resuming from {path} (after epoch {self.restored_epoch})",
              file=sys.stderr, flush=True)

    def on_epoch_end(self, epoch, logs=None):
        from kdtf.backend import memory
        from kdtf.atomic import atomic_path, atomic_write_bytes

        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{epoch + 1:06d}"
        with atomic_path(os.path.join(self.backup_dir, name), overwrite=True, directory=True) as tmp:
            self.model.save_weights(os.path.join(tmp, "state.weights.h5"))
            memory.share_saving_skipsets()
            _save_seed_states(self.model, os.path.join(tmp, _SEEDS))
            with open(os.path.join(tmp, "metadata.json"), "w") as f:
                json.dump({"epoch": epoch + 1, "fingerprint": self.fingerprint}, f)
        atomic_write_bytes(os.path.join(self.backup_dir, self._POINTER), (name + "\n").encode(),
                           overwrite=True)
        # Older backups, and temporaries left by a killed run, are stale now.
        for entry in os.listdir(self.backup_dir):
            if entry not in (name, self._POINTER) and entry.startswith(("epoch-", ".")):
                path = os.path.join(self.backup_dir, entry)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            shutil.rmtree(self.backup_dir, ignore_errors=True)


# Keras's weights files leave out `keras.random.SeedGenerator` states (the
# Distiller's synthetic-input stream, samplers, augmentation), so a resumed run
# would redraw the first epoch's random numbers: the backup keeps them here.
_SEEDS = "seed_states.npz"


def _seed_states(model):
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _save_seed_states(model, path):
    import numpy as np

    states = _seed_states(model)
    with open(path, "wb") as f:
        np.savez(f, **{f"s{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(states)})


def _restore_seed_states(model, path):
    import numpy as np

    if not os.path.exists(path):  # a backup written before the states were kept
        return
    # In the order of `model.variables`, as the weights file is (the generators'
    # names carry per-process counters, so their paths differ between runs).
    states = _seed_states(model)
    with np.load(path) as saved:
        if len(saved.files) != len(states):
            raise ValueError(
                f"backup {os.path.dirname(path)!r} holds the random-number states of another "
                "model; rerun with the same flags, or delete the directory to start over.")
        for i, v in enumerate(states):
            v.assign(saved[f"s{i}"])


def current_learning_rate(optimizer):
    """The learning rate `optimizer` applies at its next step, as a float.

    Evaluates a `LearningRateSchedule` at the optimizer's `iterations`; unwraps
    a `LossScaleOptimizer`.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class LearningRateLogger(keras.callbacks.Callback):
    """Writes the learning rate to TensorBoard every `update_freq` steps.

    `keras.callbacks.TensorBoard` logs the rate once per epoch; with a
    schedule (kdtf's runs use cosine decay) this shows it as it changes. The
    value at step `k` (the optimizer's `iterations`, 1-based like the
    `batch_*` scalars of `TensorBoard(update_freq=...)`) is the rate used by
    the update of step `k`.

    Args:
        log_dir: the `TensorBoard` callback's `log_dir`; the rate is written
            under its `train/` folder, beside the training curves, with tag
            `learning_rate`.
        update_freq: write every this many steps (int >= 1).
        per_model: write under `log_dir/<model.name>/train` (for one
            callback shared by several `fit` calls on different models, as
            SSKD's phases; pairs with `PhaseTensorBoard`).

    Example:

    >>> model.fit(ds, callbacks=[keras.callbacks.TensorBoard("logs", update_freq=1),
    ...                          kdtf.callbacks.LearningRateLogger("logs")])
    """

    def __init__(self, log_dir, update_freq=1, per_model=False):
        super().__init__()
        self.log_dir = str(log_dir)
        self.update_freq = _check_positive_int("update_freq", update_freq)
        self.per_model = per_model
        self._writer = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        base = os.path.join(self.log_dir, self.model.name) if self.per_model else self.log_dir
        self._writer = tf.summary.create_file_writer(os.path.join(base, "train"))

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        if optimizer is None or self._writer is None:
            return
        step = int(keras.ops.convert_to_numpy(optimizer.iterations)) + 1
        if step % self.update_freq:
            return
        import tensorflow as tf

        with self._writer.as_default():
            tf.summary.scalar("learning_rate", current_learning_rate(optimizer), step=step)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class PhaseTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` that logs each fitted model to `log_dir/<model.name>`.

    For one callback list passed to several `fit` calls on different models
    (SSKD's phases `sskd_phase1`, ..., `sskd_head`): each phase becomes its
    own TensorBoard run, its steps starting at 1, instead of all phases
    overwriting one curve. Takes the arguments of `TensorBoard`.
    """

    def set_model(self, model):
        if not hasattr(self, "_base_log_dir"):
            self._base_log_dir = self.log_dir
        self.log_dir = os.path.join(self._base_log_dir, model.name)
        super().set_model(model)


class MemoryLogger(keras.callbacks.Callback):
    """Records this process's resident memory (RSS, MiB) after every epoch.

    For soak tests: a training loop that leaks (a growing Python list, a
    retraced function per step, an unbounded cache) shows up as RSS growing
    epoch after epoch. `history` holds `(epoch, seconds, rss_mib)` rows and,
    with `log_dir`, each value is also written to TensorBoard as `rss_mib`.

    Args:
        log_dir: optional TensorBoard directory.

    Example:
    >>> mem = kdtf.callbacks.MemoryLogger()
    >>> distiller.fit(train, epochs=50, callbacks=[mem])
    >>> kdtf.callbacks.MemoryLogger.growth(mem.history, warmup=2)
    """

    def __init__(self, log_dir=None):
        super().__init__()
        self.log_dir = log_dir
        self.history = []
        self._start = None
        self._writer = None

    def on_train_begin(self, logs=None):
        import time

        self._start = self._start or time.time()
        if self.log_dir and self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        import time

        from kdtf.backend.memory import PeakMemory

        rss = PeakMemory.rss_mib()
        self.history.append((len(self.history), time.time() - self._start, rss))
        if self._writer is not None and rss is not None:
            import tensorflow as tf

            with self._writer.as_default():
                tf.summary.scalar("rss_mib", rss, step=len(self.history))

    @staticmethod
    def growth(history, warmup=2):
        """Relative RSS growth from the end of epoch `warmup` to the last epoch."""
        rows = [r for r in history if r[2] is not None]
        if len(rows) <= warmup:
            raise ValueError(f"growth needs more than warmup={warmup} epochs; got {len(rows)}.")
        base = rows[warmup - 1][2] if warmup > 0 else rows[0][2]
        return (rows[-1][2] - base) / base
