"""The batch format: a batch's inputs, or a dict of them and per-example extras.

A batch's `x` is either the inputs themselves or the dict

    {"inputs": inputs, "teacher_outputs": cached, "index": index}

where both extras are optional: `"teacher_outputs"` holds teacher outputs
computed once (`kdtf.caching.TeacherCache` writes them) and `"index"` each
example's int position in the training set (losses that keep per-example
state, such as CRD's memory bank, need it; `kdtf.data.make_dataset(...,
index=True)` adds it). Attach the index before shuffling. The Distiller reads
batches only through `split`, so this module is the one place the format is
defined; it imports nothing, so the Distiller does not import TensorFlow.

Example:

>>> x = kdtf.batches.make(images, index=np.arange(len(images)))
>>> distiller.fit(x, labels, shuffle=True)
"""

INPUTS_KEY = "inputs"
CACHED_OUTPUTS_KEY = "teacher_outputs"
INDEX_KEY = "index"
_EXTRAS = (CACHED_OUTPUTS_KEY, INDEX_KEY)


def make(inputs, teacher_outputs=None, index=None):
    """The `x` of a batch (or of a whole dataset) with the extras given.

    Args:
        inputs: the model inputs.
        teacher_outputs: cached teacher outputs, one row per example, or None.
        index: int positions of the examples in the training set, or None.

    Returns:
        `inputs` itself when no extra is given, else the dict.
    """
    extras = {k: v for k, v in zip(_EXTRAS, (teacher_outputs, index)) if v is not None}
    return {INPUTS_KEY: inputs, **extras} if extras else inputs


def split(x):
    """`(inputs, cached teacher outputs or None, index or None)` of a batch's `x`.

    Args:
        x: the inputs of a batch, or the dict of `make`. Any other dict (one
            without `"teacher_outputs"` that is not exactly `{"inputs",
            "index"}`) is a model's own dict input and is returned as inputs.

    Returns:
        The three parts.

    Raises:
        ValueError: a dict with an extra key lacks `"inputs"` or has keys
            that are not part of the format.
    """
    if not _is_format(x):
        return x, None, None
    unknown = sorted(set(x) - {INPUTS_KEY, *_EXTRAS})
    if INPUTS_KEY not in x or unknown:
        raise ValueError(
            "A batch with cached teacher outputs or example indices must be the dict "
            f"{{{INPUTS_KEY!r}: inputs, {CACHED_OUTPUTS_KEY!r}: outputs, {INDEX_KEY!r}: "
            f"index}} (either of the last two may be left out); got keys {sorted(x)}."
        )
    return x[INPUTS_KEY], x.get(CACHED_OUTPUTS_KEY), x.get(INDEX_KEY)


def _is_format(x):
    """A dict with cached outputs, or exactly inputs and an index: a model's own
    dict input may have an "index" key of its own (ids, tokens)."""
    if not isinstance(x, dict):
        return False
    return CACHED_OUTPUTS_KEY in x or set(x) == {INPUTS_KEY, INDEX_KEY}
