"""The optimizer of kdtf's runs: Adam with a cosine-decayed learning rate."""
import keras


def cosine_adam(learning_rate, steps, weight_decay=0.0):
    """Adam whose learning rate decays from `learning_rate` to 0 over `steps` by a cosine.

    Every run of the apps, SSKD's phases and the studies build their optimizer
    here, so they train alike.

    Args:
        learning_rate: the peak (initial) learning rate.
        steps: optimizer steps of the whole run (at least 1 is used).
        weight_decay: decoupled weight decay; > 0 gives `keras.optimizers.AdamW`.

    Returns:
        A `keras.optimizers.Adam` or `AdamW`.

    Example:

    >>> opt = kdtf.optimizers.cosine_adam(3e-3, steps=60 * 29)
    """
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, int(steps)))
    if weight_decay:
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    return keras.optimizers.Adam(schedule)
