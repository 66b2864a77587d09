"""Per-backend train and test steps of the `Distiller`.

The loss math lives in `Distiller.compute_distillation_loss` and is shared;
each backend module only owns differentiation and the optimizer update, the
way `keras/src/backend/<name>/trainer.py` splits Keras's own trainers.
"""
import keras


def get_step_functions():
    """Returns `(train_step, test_step)` for the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from kdtf.backend import tensorflow as impl
    elif backend == "jax":
        from kdtf.backend import jax as impl
    else:
        raise NotImplementedError(
            f"kdtf supports the tensorflow and jax Keras backends; the active "
            f"backend is {backend!r} (set KERAS_BACKEND)."
        )
    return impl.train_step, impl.test_step
