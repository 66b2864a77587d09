"""Export of Keras models to TFLite (LiteRT) flatbuffers, with quantization.

The Keras model is first written to a temporary SavedModel with a named
`serving_default` signature (`inputs` -> `logits`), which is then converted
with `tf.lite.TFLiteConverter.from_saved_model`. (Converting a concrete
function that captures Keras 3 variables does not freeze them, and int8
calibration then fails on READ_VARIABLE ops; the SavedModel route works.)
"""

import dataclasses
import inspect
import numbers
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kdtf import cli
from kdtf import atomic
from kdtf.export.saved_model import SIGNATURE_KEY
from kdtf.export.saved_model import input_spec
from kdtf.export.saved_model import write_saved_model
from kdtf.export import verify as verify_lib

QUANTIZATIONS = ("float32", "dynamic", "float16", "int8")
_ALIASES = {None: "float32", "none": "float32", "float32": "float32"}

# The top-1 agreement with the Keras model a verified export must reach, per
# quantization (a fraction of the verification samples). float32 differs from
# Keras only by float round-off, so it may flip a near-tie in a thousand;
# float16 and dynamic-range weights move logits a little more; full int8
# quantizes every activation.
DEFAULT_MIN_AGREEMENT = {"float32": 0.999, "float16": 0.99, "dynamic": 0.99, "int8": 0.97}


class VerificationError(ValueError):
    """An export's agreement with its Keras model is below `min_agreement`.

    Raised by `tflite` after the exported file was run on `verify_data`. The
    file is not left under the requested name: it is kept beside it as
    `<name>.failed.tflite` (see `failed_path`) for inspection.

    Attributes:
        report: The `ExportReport` of the failed file (its `path` is the
            `.failed.tflite` file).
        min_agreement: The threshold that was not reached.
        path: The requested destination, which was not written.
        failed_path: Where the failed file was kept.

    Example:

    >>> try:
    ...     tflite(model, "/tmp/m.tflite", quantization="int8",
    ...            representative_data=x_cal, verify_data=x_test,
    ...            min_agreement=0.999)
    ... except VerificationError as e:
    ...     print(e.report.top1_agreement)  # doctest: +SKIP
    """

    def __init__(self, message, report=None, min_agreement=None, path=None, failed_path=None):
        super().__init__(message)
        self.report = report
        self.min_agreement = min_agreement
        self.path = path
        self.failed_path = failed_path


def failed_path(path):
    """Where `tflite` keeps a file that failed verification: `<name>.failed.tflite`.

    Args:
        path: The requested destination of the export.

    Returns:
        The sibling path, e.g. `/tmp/student.failed.tflite` for
        `/tmp/student.tflite`.

    Example:

    >>> failed_path("/tmp/student.tflite")
    '/tmp/student.failed.tflite'
    """
    path = os.path.abspath(os.fspath(path))
    stem, ext = os.path.splitext(path)
    return f"{stem}.failed{ext or '.tflite'}"


def resolve_min_agreement(min_agreement, quantization):
    """The agreement threshold for an export: the default for None, else checked.

    Args:
        min_agreement: None (the default of `quantization`, see
            `DEFAULT_MIN_AGREEMENT`), or a fraction in [0, 1]; 0 disables the
            check.
        quantization: One of `QUANTIZATIONS`.

    Returns:
        The threshold as a float in [0, 1].

    Example:

    >>> resolve_min_agreement(None, "int8")
    0.97
    """
    if min_agreement is None:
        return DEFAULT_MIN_AGREEMENT[normalize_quantization(quantization)]
    if (isinstance(min_agreement, bool) or not isinstance(min_agreement, numbers.Real)
            or not 0.0 <= float(min_agreement) <= 1.0):
        raise ValueError(
            f"`min_agreement` must be a fraction in [0, 1] (0.97 means 97% top-1 agreement; 0 "
            f"disables the check; --min_agreement in the apps), got {min_agreement!r}."
        )
    return float(min_agreement)


def normalize_quantization(quantization):
    """Maps a user-facing quantization name to one of `QUANTIZATIONS`.

    Args:
        quantization: None, `"none"`, `"float32"`, `"dynamic"`, `"float16"` or
            `"int8"` (case-insensitive).

    Returns:
        One of `"float32"`, `"dynamic"`, `"float16"`, `"int8"`.

    Example:

    >>> normalize_quantization(None)
    'float32'
    """
    key = quantization.lower() if isinstance(quantization, str) else quantization
    if key in _ALIASES:
        return _ALIASES[key]
    if key in QUANTIZATIONS:
        return key
    raise ValueError(
        f"Unknown `quantization` {quantization!r}. Valid values: None, "
        "'none', 'float32', 'dynamic', 'float16', 'int8'."
    )


def _as_batch_list(batch):
    """Turns one representative batch into a list of float32 arrays."""
    if isinstance(batch, dict):
        if len(batch) != 1:
            raise ValueError(
                "`representative_data` batches given as dicts must have "
                f"exactly one entry, got keys {sorted(batch)}."
            )
        batch = next(iter(batch.values()))
    if isinstance(batch, (list, tuple)):
        # (x,) or [x], or (x, y) pairs from a labelled dataset: keep x.
        if not batch:
            raise ValueError("`representative_data` yielded an empty batch.")
        batch = batch[0]
    return np.asarray(batch, dtype=np.float32)


def _is_sampler_pair(data):
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and callable(data[0])
        and not isinstance(data[0], type)
    )


def _needs_argument(fn):
    """Whether `fn` has a required positional parameter."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in params
    )


def representative_batches(representative_data, feature_shape, seed=0):
    """Materializes `representative_data` as a list of float32 batches.

    Args:
        representative_data: One of
            - a numpy array (or array-like) of shape `[n, *input_shape]`;
            - a generator function (a callable taking no argument) or an
              iterable, yielding batches (arrays, `[x]`, `(x, y)` or a dict
              with one entry);
            - a pair `(sampler, x_real)`: `sampler(x_real, seed=seed)` must
              return synthetic inputs with the shape of `x_real` (a kdtf
              sampler), and those synthetic inputs are used.
        feature_shape: Expected per-sample shape (without the batch axis).
        seed: Seed passed to a sampler.

    Returns:
        A non-empty list of float32 arrays of shape `[b, *feature_shape]`.

    Example:

    >>> batches = representative_batches(np.zeros((8, 40)), (40,))
    >>> len(batches), batches[0].shape
    (1, (8, 40))
    """
    feature_shape = tuple(feature_shape)
    data = representative_data
    if _is_sampler_pair(data):
        sampler, x_real = data
        x_real = np.asarray(x_real, dtype=np.float32)
        synthetic = sampler(x_real, seed=seed)
        synthetic = np.asarray(synthetic, dtype=np.float32)
        if synthetic.shape != x_real.shape:
            raise ValueError(
                "The sampler in `representative_data=(sampler, x_real)` must "
                f"return an array of shape {x_real.shape} (that of x_real), "
                f"got {synthetic.shape}."
            )
        batches = [synthetic]
    elif isinstance(data, (np.ndarray, tf.Tensor)):
        batches = [np.asarray(data, dtype=np.float32)]
    elif callable(data):
        if _needs_argument(data):
            raise ValueError(
                "`representative_data` is a callable that takes an argument; "
                "a sampler must be passed together with the real data it "
                "draws from: `representative_data=(sampler, x_real)`."
            )
        batches = [_as_batch_list(b) for b in data()]
    elif hasattr(data, "__iter__"):
        batches = [_as_batch_list(b) for b in data]
    else:
        raise TypeError(
            "`representative_data` must be a numpy array, a generator "
            "function, an iterable of batches, or a `(sampler, x_real)` pair; "
            f"got {type(data).__name__}."
        )
    batches = [b[None] if b.shape == feature_shape else b for b in batches]
    for b in batches:
        if tuple(b.shape[1:]) != feature_shape:
            raise ValueError(
                f"`representative_data` batches must have shape "
                f"[batch, {', '.join(map(str, feature_shape))}], got "
                f"{b.shape}."
            )
    batches = [b for b in batches if len(b)]
    if not batches:
        raise ValueError("`representative_data` contains no samples.")
    return batches


def _non_float32_layers(model):
    """The names of the layers of `model` that compute or store in another dtype."""
    names = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        policy = getattr(layer, "dtype_policy", None)
        if policy is None:
            continue
        if (policy.compute_dtype or "float32") != "float32" or (
                policy.variable_dtype or "float32") != "float32":
            names.append(layer.name)
    return names


def as_float32(model):
    """`model` itself when it computes in float32, else a float32 copy with its weights.

    A student trained under a mixed-precision policy (`mixed_float16`,
    `mixed_bfloat16`) computes in half precision; the TFLite converter
    cannot translate those graphs (and float16/int8 quantization expects a
    float32 model). The copy is rebuilt from the layers' configs with the
    `float32` dtype policy (`keras.models.clone_model`, nested models too)
    and gets the original weights (stored in float32 under mixed precision,
    so nothing is lost). `tflite` and `convert` call this.

    Args:
        model: A functional or `Sequential` `keras.Model`.

    Returns:
        `model`, or its float32 copy.

    Raises:
        ValueError: a subclassed model under a mixed policy, which cannot be
            rebuilt from its config: build it again under
            `keras.mixed_precision.set_global_policy("float32")` and copy
            the weights with `set_weights`.

    Example:

    >>> keras.mixed_precision.set_global_policy("mixed_float16")
    >>> student = keras.Sequential([keras.Input((40,)), keras.layers.Dense(10)])
    >>> keras.mixed_precision.set_global_policy("float32")
    >>> as_float32(student).layers[-1].compute_dtype
    'float32'
    """
    mixed = _non_float32_layers(model)
    if not mixed:
        return model

    def float32_layer(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=float32_layer, recursive=True)
        copy.set_weights(model.get_weights())
    except Exception as e:  # e.g. a subclassed model, or a layer without from_config
        raise ValueError(
            f"`model` computes in {model.dtype_policy.name if hasattr(model, 'dtype_policy') else 'mixed precision'}"
            f" (layers {mixed[:3]}{'...' if len(mixed) > 3 else ''}) and could not be rebuilt "
            f"in float32 for conversion ({type(e).__name__}: {' '.join(str(e).split())[:200]}). "
            "Build the model again under keras.mixed_precision.set_global_policy('float32'), "
            "copy the weights with set_weights(model.get_weights()) and export that copy."
        ) from e
    left = _non_float32_layers(copy)
    if left:
        raise ValueError(
            f"`model` could not be rebuilt in float32 for conversion: layers {left[:3]} still "
            "compute in another dtype. Build the model again under "
            "keras.mixed_precision.set_global_policy('float32'), copy the weights with "
            "set_weights(model.get_weights()) and export that copy."
        )
    return copy


def convert(model, quantization=None, representative_data=None,
            int8_io=False, seed=0):
    """Converts `model` to TFLite flatbuffer bytes (nothing is written).

    Args:
        model: A `keras.Model` with one input and one output (a
            mixed-precision model is converted from its float32 copy, see
            `as_float32`).
        quantization: See `tflite`.
        representative_data: See `tflite`.
        int8_io: See `tflite`.
        seed: Seed passed to a sampler in `representative_data`.

    Returns:
        The `.tflite` flatbuffer as bytes.

    Example:

    >>> model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(10)])
    >>> flatbuffer = convert(model, quantization="dynamic")
    """
    quantization = normalize_quantization(quantization)
    spec = input_spec(model)
    model = as_float32(model)  # mixed-precision students convert in float32
    if int8_io and quantization != "int8":
        raise ValueError(
            "`int8_io=True` requires `quantization='int8'`, got "
            f"quantization={quantization!r}."
        )
    if quantization == "int8":
        if representative_data is None:
            raise ValueError(
                "`quantization='int8'` requires `representative_data` (an "
                "array, a generator of batches, or a (sampler, x_real) pair) "
                "to calibrate activation ranges."
            )
        batches = representative_batches(
            representative_data, spec.shape[1:], seed=seed
        )

    with tempfile.TemporaryDirectory(prefix="kdtf_tflite_") as tmp:
        write_saved_model(model, tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            tmp, signature_keys=[SIGNATURE_KEY]
        )
        if quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            def representative_dataset():
                for batch in batches:
                    for sample in batch:
                        yield [sample[None]]

            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            ]
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        with cli.filtered_stderr():  # the converter prints its settings
            return converter.convert()


def tflite(model, path, quantization=None, representative_data=None,
           int8_io=False, overwrite=False, verify_data=None,
           verify_labels=None, seed=0, min_agreement=None):
    """Exports `model` to a `.tflite` file, optionally quantized and verified.

    Args:
        model: A `keras.Model` with one input and one output, built from
            `keras.Input`. A model trained under mixed precision
            (`mixed_float16`, `mixed_bfloat16`) is converted from a float32
            copy with its weights (`as_float32`) and verified against the
            model itself.
        path: Destination `.tflite` file. Written atomically.
        quantization: None or `"float32"` (no quantization), `"dynamic"`
            (int8 weights, float activations), `"float16"` (float16 weights)
            or `"int8"` (full-integer: int8 weights and activations, builtin
            int8 ops only).
        representative_data: Calibration inputs, required for `"int8"`: a
            numpy array `[n, *input_shape]`, a generator function or
            iterable yielding batches, or a `(sampler, x_real)` pair where
            `sampler(x_real, seed=seed)` returns synthetic inputs of the same
            shape (a kdtf sampler).
        int8_io: With `"int8"`, make the model's input and output int8 too
            (callers quantize inputs with the input scale/zero point).
        overwrite: Whether an existing file at `path` may be replaced.
        verify_data: Optional held-out inputs; if given the converted file is
            run with LiteRT and compared with `model` (see `verify_tflite`)
            before it is moved to `path`.
        verify_labels: Optional labels for `verify_data`, for accuracy.
        seed: Seed passed to a sampler in `representative_data`.
        min_agreement: The top-1 agreement with `model` on `verify_data` the
            file must reach, a fraction in [0, 1]. None: the default of the
            quantization (`DEFAULT_MIN_AGREEMENT`: float32 0.999, float16 and
            dynamic 0.99, int8 0.97); 0 disables the check. Below it,
            `VerificationError` is raised and nothing is written to `path`
            (an existing file there is left as it was): the failed file is
            kept beside it as `<name>.failed.tflite` (`failed_path(path)`,
            replacing an earlier failed file of that name) for inspection.
            Ignored without `verify_data`.

    Returns:
        An `ExportReport` (verification fields are None without
        `verify_data`).

    Raises:
        VerificationError: (a `ValueError`) the agreement is below
            `min_agreement`.

    Example:

    >>> report = tflite(model, "/tmp/student.tflite", quantization="int8",
    ...                 representative_data=x_train[:100],
    ...                 verify_data=x_test, verify_labels=y_test)
    >>> print(report)  # doctest: +SKIP
    """
    quantization = normalize_quantization(quantization)
    threshold = resolve_min_agreement(min_agreement, quantization)
    path = atomic.check_destination(path, overwrite=overwrite)
    flatbuffer = convert(
        model,
        quantization=quantization,
        representative_data=representative_data,
        int8_io=int8_io,
        seed=seed,
    )
    if verify_data is None:
        atomic.atomic_write_bytes(path, flatbuffer, overwrite=overwrite)
        return verify_lib.ExportReport(
            path=path,
            quantization=quantization,
            size_bytes=os.path.getsize(path),
            int8_io=bool(int8_io),
        )
    # The file is verified under its temporary name and only moved to `path`
    # when it passes: a failing file never stands under the final name.
    with atomic.atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
        report = verify_lib.verify_tflite(
            tmp, model, verify_data, verify_labels, quantization=quantization
        )
        report = dataclasses.replace(report, path=path, min_agreement=threshold)
        if report.top1_agreement < threshold:
            failed = failed_path(path)
            os.replace(tmp, failed)
            report = dataclasses.replace(report, path=failed)
            agree = round(report.top1_agreement * report.num_samples)
            raise VerificationError(
                f"TFLite export ({quantization}) failed verification: top-1 agreement with the "
                f"Keras model {100 * report.top1_agreement:.2f}% ({agree}/{report.num_samples} "
                f"samples) is below min_agreement={threshold:g} "
                f"({100 * threshold:.2f}%); {path} was not written, the file is kept at "
                f"{failed} for inspection. Lower the threshold with min_agreement= "
                "(--min_agreement in the apps, 0 disables the check), or try other "
                "calibration data or another quantization.",
                report=report, min_agreement=threshold, path=path, failed_path=failed,
            )
    return report
