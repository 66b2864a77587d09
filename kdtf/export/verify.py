"""Verification of exported TFLite models against their Keras source."""

import dataclasses
import os
import statistics
import time

import numpy as np

from kdtf import cli


def _interpreter_class():
    """Returns the LiteRT `Interpreter`, or `tf.lite.Interpreter`."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on installed packages.
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


@dataclasses.dataclass
class ExportReport:
    """What an export produced and how faithful it is to the Keras model.

    Attributes:
        path: Absolute path of the exported file or directory.
        quantization: One of `"float32"`, `"dynamic"`, `"float16"`, `"int8"`
            (`"saved_model"` for SavedModel exports).
        size_bytes: Size of the exported file in bytes.
        int8_io: Whether the model takes int8 inputs and returns int8
            outputs.
        num_samples: Number of held-out samples used for verification, or
            None if the export was not verified.
        top1_agreement: Fraction of samples where the exported model and the
            Keras model predict the same class.
        max_abs_error: Largest absolute difference between the (dequantized)
            exported outputs and the Keras outputs.
        accuracy: Top-1 accuracy of the exported model (if labels given).
        keras_accuracy: Top-1 accuracy of the Keras model (if labels given).
        latency_ms: Median latency of one batch-1 `invoke()` on this CPU, in
            milliseconds.
        min_agreement: The top-1 agreement the export had to reach (set by
            `kdtf.export.tflite`; None where no threshold was checked).

    Example:

    >>> report = ExportReport(path="/tmp/m.tflite", quantization="int8",
    ...                       size_bytes=8192)
    >>> report.to_dict()["size_bytes"]
    8192
    """

    path: str
    quantization: str
    size_bytes: int
    int8_io: bool = False
    num_samples: int | None = None
    top1_agreement: float | None = None
    max_abs_error: float | None = None
    accuracy: float | None = None
    keras_accuracy: float | None = None
    latency_ms: float | None = None
    min_agreement: float | None = None

    @property
    def verified(self):
        """Whether the report holds verification results."""
        return self.num_samples is not None

    def to_dict(self):
        """Returns the report as a JSON-serializable dict."""
        return dataclasses.asdict(self)

    def __str__(self):
        size = self.size_bytes / 1024.0
        io = ", int8 I/O" if self.int8_io else ""
        lines = [
            f"TFLite export ({self.quantization}{io}): {self.path} "
            f"[{size:.1f} KiB]"
        ]
        if not self.verified:
            lines.append("  not verified (pass verify_data to verify)")
            return "\n".join(lines)
        lines.append(
            f"  agreement with Keras: {100 * self.top1_agreement:.2f}% top-1 "
            f"on {self.num_samples} samples, max |error| "
            f"{self.max_abs_error:.4g}"
            + (f" (required: {100 * self.min_agreement:.2f}%)" if self.min_agreement else "")
        )
        if self.accuracy is not None:
            lines.append(
                f"  accuracy: {100 * self.accuracy:.2f}% "
                f"(Keras: {100 * self.keras_accuracy:.2f}%)"
            )
        if self.latency_ms is not None:
            lines.append(
                f"  latency: {self.latency_ms:.4f} ms/sample "
                "(median, batch 1, this CPU)"
            )
        return "\n".join(lines)


def _quantize(x, detail):
    """Quantizes float `x` for an integer input tensor."""
    scale, zero_point = detail["quantization"]
    dtype = detail["dtype"]
    if scale == 0:
        raise ValueError(
            "The TFLite model has an integer input without quantization "
            "parameters; cannot feed float data to it."
        )
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y, detail):
    """Dequantizes an integer output tensor to float32."""
    if not np.issubdtype(detail["dtype"], np.integer):
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


class _Runner:
    """Runs a single-input single-output TFLite model on numpy batches."""

    def __init__(self, path, num_threads=None):
        Interpreter = _interpreter_class()
        with cli.filtered_stderr():  # LiteRT announces its XNNPACK delegate
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"Only single-input single-output TFLite models can be "
                f"verified; {path!r} has {len(inputs)} inputs and "
                f"{len(outputs)} outputs."
            )
        self.input = inputs[0]
        self.output = outputs[0]
        self._batch = None

    @property
    def int_input(self):
        return np.issubdtype(self.input["dtype"], np.integer)

    @property
    def feature_shape(self):
        signature = self.input.get("shape_signature", self.input["shape"])
        return tuple(int(d) for d in signature[1:])

    def _prepare(self, batch):
        if batch != self._batch:
            shape = [batch, *self.feature_shape]
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            with cli.filtered_stderr():
                self.interpreter.allocate_tensors()
            self._batch = batch

    def set_input(self, x):
        self._prepare(len(x))
        if self.int_input:
            x = _quantize(x, self.input)
        else:
            x = x.astype(self.input["dtype"])
        self.interpreter.set_tensor(self.input["index"], x)

    def output_values(self):
        y = self.interpreter.get_tensor(self.output["index"])
        return _dequantize(y, self.output)

    def __call__(self, x):
        self.set_input(x)
        self.interpreter.invoke()
        return self.output_values()


def _infer_quantization(path):
    """Guesses the quantization mode of a .tflite file from its ops."""
    try:
        interpreter = _interpreter_class()(model_path=path)
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        dtypes = {d["dtype"] for d in interpreter.get_tensor_details()}
        input_dtype = interpreter.get_input_details()[0]["dtype"]
    except Exception:  # Private API; best effort only.
        return "unknown"
    if np.issubdtype(input_dtype, np.integer) or "QUANTIZE" in ops:
        return "int8"
    if np.float16 in dtypes:
        return "float16"
    if np.int8 in dtypes:
        return "dynamic"
    return "float32"


def _labels(y, n):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=-1)
    y = y.reshape(-1)
    if len(y) != n:
        raise ValueError(
            f"`y` must have one label per sample of `x`: got {len(y)} labels "
            f"for {n} samples."
        )
    return y


def measure_latency(path, x, num_samples=20, warmup=3, num_threads=None):
    """Median wall-clock time of one batch-1 `invoke()`, in milliseconds.

    Args:
        path: Path to a .tflite file.
        x: Samples to run, of shape `[n, *input_shape]`; the first
            `num_samples` are used (cycled if fewer).
        num_samples: Number of timed invocations.
        warmup: Number of untimed invocations before timing.
        num_threads: Interpreter threads (None: the LiteRT default).

    Returns:
        The median latency in milliseconds.

    Example:

    >>> measure_latency("/tmp/student.tflite", x_test)  # doctest: +SKIP
    0.012
    """
    runner = _Runner(os.fspath(path), num_threads=num_threads)
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise ValueError("`x` must contain at least one sample.")
    for i in range(warmup):
        runner(x[i % len(x)][None])
    times = []
    for i in range(num_samples):
        runner.set_input(x[i % len(x)][None])
        start = time.perf_counter()
        runner.interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def verify_tflite(path, model, x, y=None, batch_size=256, quantization=None,
                  num_latency_samples=20):
    """Runs a .tflite file on held-out data and compares it to `model`.

    The file is run with the LiteRT interpreter (`ai_edge_litert`, or
    `tf.lite.Interpreter` if that package is missing). Integer inputs are
    quantized with the input scale and zero point, integer outputs are
    dequantized before comparison.

    Args:
        path: Path to the .tflite file.
        model: The Keras model the file was exported from.
        x: Held-out inputs, shape `[n, *input_shape]`.
        y: Optional labels (class indices or one-hot) for accuracy.
        batch_size: Batch size for the accuracy/agreement pass.
        quantization: The quantization mode to record in the report; if None
            it is inferred from the file.
        num_latency_samples: Number of batch-1 invocations to time (0 to
            skip latency measurement).

    Returns:
        An `ExportReport`.

    Example:

    >>> report = verify_tflite("/tmp/student.tflite", model, x_test, y_test)
    >>> print(report)  # doctest: +SKIP
    TFLite export (int8): /tmp/student.tflite [7.8 KiB]
      agreement with Keras: 99.80% top-1 on 1000 samples, max |error| 0.031
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` is not a file: {path!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int, got {batch_size!r}."
        )
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(
            f"`x` must be a non-empty batch of shape [n, *input_shape], got "
            f"shape {x.shape}."
        )
    runner = _Runner(path)
    if tuple(x.shape[1:]) != runner.feature_shape:
        raise ValueError(
            f"`x` samples have shape {tuple(x.shape[1:])} but the TFLite model "
            f"expects {runner.feature_shape}."
        )
    labels = None if y is None else _labels(y, len(x))

    expected = np.asarray(
        model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32
    )
    actual = np.concatenate(
        [runner(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    )
    if actual.shape != expected.shape:
        raise ValueError(
            f"The TFLite model returns shape {actual.shape} but the Keras "
            f"model returns {expected.shape}; is `model` the source of "
            f"{path!r}?"
        )
    flat_actual = actual.reshape(len(x), -1)
    flat_expected = expected.reshape(len(x), -1)
    pred = np.argmax(flat_actual, axis=-1)
    keras_pred = np.argmax(flat_expected, axis=-1)

    latency = None
    if num_latency_samples:
        latency = measure_latency(path, x, num_samples=num_latency_samples)
    return ExportReport(
        path=path,
        quantization=quantization or _infer_quantization(path),
        size_bytes=os.path.getsize(path),
        int8_io=bool(runner.int_input),
        num_samples=int(len(x)),
        top1_agreement=float(np.mean(pred == keras_pred)),
        max_abs_error=float(np.max(np.abs(flat_actual - flat_expected))),
        accuracy=None if labels is None else float(np.mean(pred == labels)),
        keras_accuracy=(
            None if labels is None else float(np.mean(keras_pred == labels))
        ),
        latency_ms=latency,
    )
