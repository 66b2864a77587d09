"""Multiply-accumulate (MAC) and FLOP counts of the Dense and convolution layers of a Keras model.

What is counted: one multiply-accumulate per weight of a `Dense` kernel per
position it is applied at (`Dense` on `[batch, ..., features]` inputs is
applied at every leading position), and one per convolution-kernel weight per
output position (`Conv1D/2D/3D` with any `groups`, `DepthwiseConv1D/2D`,
`SeparableConv1D/2D` = depthwise + pointwise) or per input position
(`Conv*Transpose`). `FLOPs = 2 x MACs` (a multiply and an add each). Biases,
activations, normalisation, pooling and element-wise ops are not counted:
in the zoo models they are well under 1% of the total. Counts are per
example (batch 1), at inference.

The layers are found by running the model once on zeros with every such
layer's `call` wrapped to record its input and output shapes, so layers in
nested models, custom blocks and shared layers (counted once per call) are
all seen.
"""
import dataclasses

import keras
import numpy as np


@dataclasses.dataclass
class LayerCount:
    """MACs of one call of one layer.

    Attributes:
        name: the layer's name (`path` for nested layers).
        kind: the layer's class name.
        output_shape: the output shape of that call, batch 1.
        macs: multiply-accumulates per example.
    """

    name: str
    kind: str
    output_shape: tuple
    macs: int

    @property
    def flops(self):
        """`2 * macs`."""
        return 2 * self.macs


def _positions(shape, data_format):
    """Number of spatial positions of a conv input/output `[1, ..., C]`."""
    dims = shape[2:] if data_format == "channels_first" else shape[1:-1]
    return int(np.prod(dims, dtype=np.int64)) if len(dims) else 1


def _size(variable):
    return int(np.prod(variable.shape, dtype=np.int64))


def layer_macs(layer, input_shape, output_shape):
    """MACs per example of one call of `layer`, or None if it is not counted.

    Args:
        layer: a Keras layer.
        input_shape: the shape of its (first) input in that call, batch 1.
        output_shape: the shape of its output, batch 1.

    Returns:
        An int, or None for layers that are not Dense/convolutions.

    Example:

    >>> layer_macs(keras.layers.Dense(10), (1, 64), (1, 10))  # doctest: +SKIP
    640
    """
    L = keras.layers
    fmt = getattr(layer, "data_format", "channels_last")
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        n = _positions(output_shape, fmt)
        return n * (_size(layer.depthwise_kernel) + _size(layer.pointwise_kernel))
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return _positions(output_shape, fmt) * _size(layer.kernel)
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return _positions(input_shape, fmt) * _size(layer.kernel)
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        # kernel [*k, in / groups, filters]: one MAC per weight per output position.
        return _positions(output_shape, fmt) * _size(layer.kernel)
    if isinstance(layer, L.Dense):
        leading = int(np.prod(input_shape[1:-1], dtype=np.int64)) if len(input_shape) > 2 else 1
        return leading * _size(layer.kernel)
    return None


def _counted_types():
    L = keras.layers
    return (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.Conv1DTranspose, L.Conv2DTranspose,
            L.Conv3DTranspose, L.DepthwiseConv1D, L.DepthwiseConv2D, L.SeparableConv1D,
            L.SeparableConv2D)


def _counted_layers(model):
    types = _counted_types()
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, types)]


def _first_shape(value):
    for item in keras.tree.flatten(value):
        if hasattr(item, "shape"):
            return tuple(int(d) for d in item.shape)
    return ()


def count_macs(model, input_shape=None):
    """Per-layer multiply-accumulates of `model` for one example.

    Args:
        model: a built `keras.Model` (functional, sequential or subclassed).
        input_shape: shape of one example without the batch axis (or a list of
            them for several inputs); defaults to the model's input shape.

    Returns:
        A list of `LayerCount`, one per call of a Dense/convolution layer, in
        call order. `sum(c.macs for c in ...)` is the model's MACs; FLOPs are
        twice that.

    Example:

    >>> counts = count_macs(kdtf.models.get("mnist1d_mlp"))  # doctest: +SKIP
    >>> sum(c.macs for c in counts)
    15040
    """
    if input_shape is None:
        from kdtf.models import known_inputs

        inputs = known_inputs(model)
        if not inputs:
            raise ValueError(
                f"count_macs: the model {model.name!r} has no known input shape; pass "
                "`input_shape` (one example, without the batch axis)."
            )
        specs = [(tuple(x.shape[1:]), x.dtype) for x in inputs]
    else:
        shapes = input_shape if input_shape and isinstance(input_shape[0], (tuple, list)) else [input_shape]
        specs = [(tuple(s), "float32") for s in shapes]
    for shape, _ in specs:
        if any(d is None for d in shape):
            raise ValueError(
                f"count_macs: the input shape {shape} of {model.name!r} has unknown "
                "dimensions; pass `input_shape` with every dimension set."
            )
    xs = [np.zeros((1, *shape), dtype=keras.backend.standardize_dtype(dtype)) for shape, dtype in specs]

    counts = []
    layers = _counted_layers(model)
    paths = {id(layer): getattr(layer, "path", layer.name) for layer in layers}

    def wrap(layer, call):
        def counting_call(*args, **kwargs):
            out = call(*args, **kwargs)
            in_shape = _first_shape(args[0] if args else next(iter(kwargs.values())))
            out_shape = _first_shape(out)
            macs = layer_macs(layer, in_shape, out_shape)
            if macs is not None:
                counts.append(LayerCount(paths[id(layer)], type(layer).__name__, out_shape, int(macs)))
            return out

        return counting_call

    patched = []
    try:
        for layer in layers:
            had_own = "call" in vars(layer)
            original = layer.call
            object.__setattr__(layer, "call", wrap(layer, original))
            patched.append((layer, had_own, original))
        model(xs[0] if len(xs) == 1 else xs, training=False)
    finally:
        for layer, had_own, original in patched:
            if had_own:
                object.__setattr__(layer, "call", original)
            else:
                object.__delattr__(layer, "call")
    return counts


def model_complexity(model, input_shape=None):
    """Parameters, MACs and FLOPs (= 2 x MACs) of `model` per example.

    Args:
        model: a built `keras.Model`.
        input_shape: see `count_macs`.

    Returns:
        A dict with `params`, `macs`, `flops` and `layers` (the
        `LayerCount`s as dicts).

    Example:

    >>> model_complexity(kdtf.models.get("mnist1d_cnn"))["flops"]  # doctest: +SKIP
    """
    counts = count_macs(model, input_shape)
    macs = int(sum(c.macs for c in counts))
    return {
        "params": int(model.count_params()),
        "macs": macs,
        "flops": 2 * macs,
        "layers": [dict(dataclasses.asdict(c), flops=c.flops) for c in counts],
    }
