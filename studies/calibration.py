"""Int8 calibration data for TFLite export, and Keras-native export paths.

The study behind results/calibration.md (issue 6, items 2 and 3):

1. **Calibration data** (`--part=calibration`). A small CNN student is
   trained on MNIST-1D (`mnist1d_cnn_small`, ERM) and on MNIST
   (`mnist_cnn_small`, ERM, pixels scaled to [0, 1]) and exported with
   `kdtf.export.tflite(..., quantization="int8")` (int8 weights and
   activations, float input/output), calibrated on 100 inputs from each
   source in `SOURCES`: real training inputs, every applicable kdtf sampler
   fitted/seeded on those same 100 real inputs, and pure noise (uniform over
   the data range, standard normal). Each file is run with LiteRT on the test
   split: top-1 agreement with the float Keras student, test accuracy and
   max |logit error|, over 3 calibration seeds (the seed picks the 100 real
   inputs and seeds the sampler). The float32 TFLite file is the baseline.
2. **Keras-native export paths** (`--part=native`). On the trained MNIST-1D
   students (the CNN above and an all-Dense `mnist1d_mlp`), tries
   `model.export(path, format="litert")` (plain, dynamic-range and full-int8
   converter options), `model.quantize("int8")` followed by
   `model.export(format="litert")` and by the TF converter
   (`TFLiteConverter.from_keras_model`, `from_saved_model` after
   `model.export(format="tf_saved_model")`, `kdtf.export.tflite`), and
   compares every file that converts with `kdtf.export.tflite` (size,
   agreement with the float Keras model, max error, accuracy, latency, via
   `kdtf.export.verify`). Failures are recorded with their exact error.

    python -m studies.calibration --workdir=/work/scratch/calibration/final \
        --output=results/calibration.md
"""
import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings

import keras
import numpy as np

from kdtf import data as data_lib
from pipeline import experiment
from kdtf import samplers as samplers_lib
from kdtf import export as export_lib
from kdtf.export import verify as verify_lib

# (key, label) of every calibration source, in table order.
SOURCES = (
    ("real", "real training inputs"),
    ("mixup", "Mixup (alpha 1)"),
    ("cutmix", "CutMix (alpha 1)"),
    ("noise", "GaussianNoise (0.3 x per-feature std)"),
    ("gmm_diag", "GaussianMixture diag (K=5)"),
    ("gmm_full", "GaussianMixture full (K=5)"),
    ("uniform_box", "UniformBox fitted (per-feature min/max)"),
    ("uniform_range", "random: uniform over the data range"),
    ("normal", "random: standard normal N(0, 1)"),
)
SOURCE_LABELS = dict(SOURCES)
GMM_COMPONENTS = 5


@dataclasses.dataclass
class Setting:
    """One dataset of the calibration study.

    Attributes:
        dataset: `kdtf.data.load` name.
        student: `kdtf.models` name of the exported model.
        epochs: ERM training epochs.
        learning_rate: peak Adam learning rate (cosine decay).
    """

    dataset: str
    student: str
    epochs: int
    learning_rate: float = 3e-3


SETTINGS = {
    "mnist1d": Setting("mnist1d", "mnist1d_cnn_small", 60, 1e-2),
    "mnist": Setting("mnist", "mnist_cnn_small", 8, 3e-3),
}
# The all-Dense student of the native-export part (Keras' `quantize` only
# quantizes Dense/EinsumDense/Embedding layers, not convolutions).
NATIVE_MLP = Setting("mnist1d", "mnist1d_mlp", 30, 3e-3)


# ------------------------------------------------------------------ data
def load_splits(dataset):
    """`kdtf.data.load(dataset)`, with uint8 images scaled to float32 [0, 1]."""
    splits = data_lib.load(dataset, seed=0)
    if splits.x_train.dtype == np.uint8:
        scale = lambda a: a.astype("float32") / 255.0  # noqa: E731
        splits = dataclasses.replace(
            splits, x_train=scale(splits.x_train), x_val=scale(splits.x_val),
            x_test=scale(splits.x_test))
    return splits


def applicable_sources(input_shape, max_full_dim=1000):
    """`(keys, skipped)`: the sources that apply to inputs of `input_shape`.

    CutMix needs `[H, W, C]` images; a full-covariance mixture is skipped
    above `max_full_dim` flattened features (its `K D^2` parameters).
    """
    keys, skipped = [], {}
    dim = int(np.prod(input_shape))
    for key, _ in SOURCES:
        if key == "cutmix" and len(input_shape) != 3:
            skipped[key] = "needs [H, W, C] images"
        elif key == "gmm_full" and dim > max_full_dim:
            skipped[key] = f"{dim} features > --max_full_dim={max_full_dim}"
        else:
            keys.append(key)
    return keys, skipped


def real_subset(x_train, num_samples, seed):
    """`num_samples` distinct training inputs chosen by `seed`."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x_train), size=min(num_samples, len(x_train)), replace=False)
    return np.asarray(x_train[np.sort(idx)], dtype=np.float32)


def calibration_inputs(source, x_real, seed, data_range):
    """Calibration inputs (as many as `x_real`) from `source`.

    Args:
        source: a key of `SOURCES`.
        x_real: the real inputs of this seed; samplers are fitted and drawn
            from these only.
        seed: seed of the sampler / noise.
        data_range: `(low, high)` scalars of the whole training set, for
            "uniform_range".

    Returns:
        A float32 array of the shape of `x_real`.
    """
    n = len(x_real)
    if source == "real":
        return x_real
    if source == "mixup":
        sampler = samplers_lib.Mixup(alpha=1.0, seed=seed)
    elif source == "cutmix":
        sampler = samplers_lib.CutMix(alpha=1.0, seed=seed)
    elif source == "noise":
        sampler = samplers_lib.GaussianNoise(stddev=0.3, seed=seed)
    elif source in ("gmm_diag", "gmm_full"):
        sampler = samplers_lib.GaussianMixture(
            num_components=GMM_COMPONENTS, covariance=source[4:], seed=seed).fit(x_real)
    elif source == "uniform_box":
        sampler = samplers_lib.UniformBox(seed=seed)
    elif source == "uniform_range":
        sampler = samplers_lib.UniformBox(
            low=float(data_range[0]), high=float(data_range[1]), seed=seed)
    elif source == "normal":
        rng = np.random.default_rng(10_000 + seed)
        return rng.standard_normal(x_real.shape).astype(np.float32)
    else:
        raise ValueError(f"source: unknown {source!r}; valid: {', '.join(SOURCE_LABELS)}.")
    out = np.asarray(sampler(x_real, seed=seed, num_samples=n), dtype=np.float32)
    if out.shape != x_real.shape:
        raise AssertionError(f"{source} returned shape {out.shape}, expected {x_real.shape}.")
    return out


# -------------------------------------------------------------- training
def train_student(setting, splits, workdir, seed=0, log=print):
    """Trains (or reloads from `workdir`) the ERM student of `setting`."""
    path = os.path.join(
        workdir, "calibration_students",
        f"{setting.dataset}_{setting.student}_e{setting.epochs}_lr{setting.learning_rate:g}_s{seed}.keras")
    if os.path.exists(path):
        log(f"reusing student {path}")
        return experiment.load_model(path, "student"), path
    cfg = experiment.RunConfig(
        method="none", dataset=setting.dataset, student=setting.student,
        epochs=setting.epochs, learning_rate=setting.learning_rate, seed=seed,
        workdir=workdir, verbose=0, compare_erm=False)
    experiment.seed_everything(cfg)
    student, _ = experiment.train_student(cfg, splits, None, "none")
    experiment.save_model_atomic(student, path)
    return student, path


# ----------------------------------------------------- part 1: calibration
def mean_abs_error(path, x, expected, batch_size=256):
    """Mean |TFLite - Keras| logit over `x` (the TFLite file run with LiteRT)."""
    runner = verify_lib._Runner(os.fspath(path))
    out = np.concatenate([runner(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return float(np.mean(np.abs(out.reshape(expected.shape) - expected)))


def _report_fields(report):
    return {
        "top1_agreement": report.top1_agreement,
        "accuracy": report.accuracy,
        "max_abs_error": report.max_abs_error,
        "size_bytes": report.size_bytes,
        "latency_ms": report.latency_ms,
    }


def run_calibration(model, splits, seeds=(0, 1, 2), num_samples=100, sources=None,
                    max_full_dim=1000, outdir=None, log=print):
    """Exports `model` to int8 TFLite with each calibration source and seed.

    Args:
        model: the trained float Keras model.
        splits: its `Splits` (float inputs); real inputs come from `x_train`,
            verification uses `x_test`/`y_test`.
        seeds: calibration seeds.
        num_samples: calibration inputs per export.
        sources: keys of `SOURCES` to try (default: all applicable).
        max_full_dim: see `applicable_sources`.
        outdir: where the .tflite files go (default: a temporary directory).
        log: a print-like function.

    Returns:
        A dict with the float Keras accuracy, the float32 TFLite baseline,
        the per-seed `rows` and the `skipped` sources (with the reason).
    """
    keys, skipped = applicable_sources(tuple(splits.x_train.shape[1:]), max_full_dim)
    if sources is not None:
        keys = [k for k in keys if k in sources]
    x_test, y_test = splits.x_test, splits.y_test
    data_range = (float(np.min(splits.x_train)), float(np.max(splits.x_train)))
    expected = np.asarray(model.predict(x_test, batch_size=512, verbose=0), dtype=np.float32)
    tmp = None
    if outdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="kdtf_calibration_")
        outdir = tmp.name
    os.makedirs(outdir, exist_ok=True)
    try:
        float_report = export_lib.tflite(
            model, os.path.join(outdir, "float32.tflite"), quantization="float32",
            verify_data=x_test, verify_labels=y_test, overwrite=True)
        float_mae = mean_abs_error(float_report.path, x_test, expected)
        log(f"float32 TFLite: agreement {float_report.top1_agreement:.4f}, "
            f"accuracy {float_report.accuracy:.4f}")
        rows = []
        for seed in seeds:
            x_real = real_subset(splits.x_train, num_samples, seed)
            for key in keys:
                start = time.time()
                x_cal = calibration_inputs(key, x_real, seed, data_range)
                sample_seconds = time.time() - start
                report = export_lib.tflite(
                    model, os.path.join(outdir, f"int8_{key}_s{seed}.tflite"),
                    quantization="int8", representative_data=x_cal,
                    # The study measures agreement, poor sources included: no threshold.
                    verify_data=x_test, verify_labels=y_test, overwrite=True, min_agreement=0)
                row = {"source": key, "seed": seed, **_report_fields(report),
                       "mean_abs_error": mean_abs_error(report.path, x_test, expected),
                       "calibration_min": float(x_cal.min()),
                       "calibration_max": float(x_cal.max()),
                       "sample_seconds": sample_seconds,
                       "seconds": time.time() - start}
                rows.append(row)
                log(f"  seed {seed} {key:>13}: agreement {row['top1_agreement']:.4f}, "
                    f"accuracy {row['accuracy']:.4f}, max|err| {row['max_abs_error']:.3f}, "
                    f"mean|err| {row['mean_abs_error']:.4f} "
                    f"({row['seconds']:.1f} s)")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {
        "keras_accuracy": float_report.keras_accuracy,
        "float32": float_report.to_dict(),
        "float32_mean_abs_error": float_mae,
        "max_abs_logit": float(np.max(np.abs(expected))),
        "mean_abs_logit": float(np.mean(np.abs(expected))),
        "data_range": list(data_range),
        "num_samples": int(num_samples),
        "seeds": list(seeds),
        "sources": keys,
        "skipped": skipped,
        "rows": rows,
    }


# ---------------------------------------------------------- part 2: native
def _first_line(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _strip_locations(text):
    """Drops the MLIR `loc(...)` call-site blobs from a converter error."""
    out, i = [], 0
    while True:
        j = text.find("loc(", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        depth, k = 0, j + 3
        while k < len(text):
            depth += {"(": 1, ")": -1}.get(text[k], 0)
            k += 1
            if depth == 0:
                break
        i = k
    return "".join(out)


def short_error(error, limit=260):
    """A one-line form of a converter error: MLIR `loc(...)` blobs and the
    dump of the MLIR module that some errors append are dropped."""
    text = _first_line(_strip_locations(error), 100_000).replace(": :", ":")
    dump = text.find('note: see current operation: "func.func"')
    if dump >= 0:
        text = text[:dump] + "note: see current operation: [MLIR module dump elided]"
    return text if len(text) <= limit else text[:limit] + " ..."


def _ops(path):
    """Sorted op names of a .tflite file (best effort, private LiteRT API)."""
    try:
        interpreter = verify_lib._interpreter_class()(model_path=path)
        return sorted({op["op_name"] for op in interpreter._get_ops_details()})
    except Exception as e:  # noqa: BLE001
        return [f"? ({type(e).__name__})"]


def _representative_dataset(x_cal):
    def gen():
        for sample in x_cal:
            yield [sample[None].astype(np.float32)]
    return gen


def _quantized_copy(path):
    """A fresh copy of the model at `path`, quantized with `quantize("int8")`.

    Returns `(model, quantized_layer_names, warnings)`.
    """
    model = experiment.load_model(path, "student")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.quantize("int8")
    quantized = [layer.name for layer in model.layers
                 if getattr(layer, "quantization_mode", None) == "int8"]
    messages = {_first_line(w.message, 160) for w in caught}
    return model, quantized, sorted(m for m in messages if "quantize" in m)


def native_paths(model_path, splits, x_cal, outdir, latency_samples=200, log=print):
    """Tries every Keras-native export path on the model saved at `model_path`.

    Args:
        model_path: a `.keras` file of a trained single-input classifier.
        splits: its `Splits` (test split for verification).
        x_cal: float32 calibration inputs for the int8 paths.
        outdir: where the .tflite files go.
        latency_samples: batch-1 invocations timed per file.
        log: a print-like function.

    Returns:
        A dict with the Keras float and `quantize("int8")` metrics and one row
        per path: `status` "ok" with the `verify_tflite` fields and ops, or
        "failed" with the exact `error`.
    """
    import tensorflow as tf

    from kdtf import metrics as metrics_lib

    os.makedirs(outdir, exist_ok=True)
    x_test, y_test = splits.x_test, splits.y_test
    model = experiment.load_model(model_path, "student")
    float_logits = np.asarray(model.predict(x_test, batch_size=512, verbose=0), np.float32)
    qmodel, quantized_layers, q_warnings = _quantized_copy(model_path)
    q_logits = qmodel.predict(x_test, batch_size=512, verbose=0)
    keras_rows = {
        "float": {"accuracy": float(metrics_lib.accuracy(y_test, float_logits)),
                  "max_abs_logit": float(np.max(np.abs(float_logits))),
                  "mean_abs_logit": float(np.mean(np.abs(float_logits)))},
        "quantized": {
            "accuracy": float(metrics_lib.accuracy(y_test, q_logits)),
            "top1_agreement": float(metrics_lib.agreement(float_logits, q_logits)),
            "max_abs_error": float(np.max(np.abs(q_logits - float_logits))),
            "mean_abs_error": float(np.mean(np.abs(q_logits - float_logits))),
            "quantized_layers": quantized_layers,
            "all_layers": [layer.name for layer in model.layers],
            "warnings": q_warnings,
        },
    }
    int8_kwargs = dict(
        optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=_representative_dataset(x_cal),
        target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
    )

    def keras_litert(m, **kwargs):
        def fn(path):
            m.export(path, format="litert", verbose=False, **kwargs)
        return fn

    def from_keras_model(m):
        def fn(path):
            converter = tf.lite.TFLiteConverter.from_keras_model(m)
            with open(path, "wb") as f:
                f.write(converter.convert())
        return fn

    def via_tf_saved_model(m):
        def fn(path):
            with tempfile.TemporaryDirectory(prefix="kdtf_native_sm_") as sm:
                m.export(sm, format="tf_saved_model", verbose=False)
                converter = tf.lite.TFLiteConverter.from_saved_model(sm)
                data = converter.convert()
            with open(path, "wb") as f:
                f.write(data)
        return fn

    def kdtf_tflite(m, quantization):
        def fn(path):
            export_lib.tflite(m, path, quantization=quantization,
                              representative_data=x_cal if quantization == "int8" else None,
                              overwrite=True)
        return fn

    paths = [
        ("kdtf_float32", "float model -> `kdtf.export.tflite` (float32)",
         kdtf_tflite(model, "float32")),
        ("kdtf_dynamic", "float model -> `kdtf.export.tflite(quantization=\"dynamic\")`",
         kdtf_tflite(model, "dynamic")),
        ("kdtf_int8", "float model -> `kdtf.export.tflite(quantization=\"int8\")` (100 real inputs)",
         kdtf_tflite(model, "int8")),
        ("keras_litert", "float model -> `model.export(format=\"litert\")`",
         keras_litert(model)),
        ("keras_litert_dynamic",
         "float model -> `model.export(format=\"litert\", optimizations=[DEFAULT])`",
         keras_litert(model, optimizations=[tf.lite.Optimize.DEFAULT])),
        ("keras_litert_int8",
         "float model -> `model.export(format=\"litert\", optimizations=[DEFAULT], "
         "representative_dataset=..., target_spec={supported_ops: [TFLITE_BUILTINS_INT8]})`",
         keras_litert(model, **int8_kwargs)),
        ("tf_from_keras_model", "float model -> `tf.lite.TFLiteConverter.from_keras_model`",
         from_keras_model(model)),
        ("q_keras_litert", "`quantize(\"int8\")` -> `model.export(format=\"litert\")`",
         keras_litert(qmodel)),
        ("q_keras_litert_flex",
         "`quantize(\"int8\")` -> `model.export(format=\"litert\", "
         "target_spec={supported_ops: [SELECT_TF_OPS]})` (TF ops only)",
         keras_litert(qmodel, target_spec={"supported_ops": [tf.lite.OpsSet.SELECT_TF_OPS]})),
        ("q_tf_from_keras_model",
         "`quantize(\"int8\")` -> `tf.lite.TFLiteConverter.from_keras_model`",
         from_keras_model(qmodel)),
        ("q_tf_saved_model",
         "`quantize(\"int8\")` -> `model.export(format=\"tf_saved_model\")` -> "
         "`TFLiteConverter.from_saved_model`", via_tf_saved_model(qmodel)),
        ("q_kdtf_float32", "`quantize(\"int8\")` -> `kdtf.export.tflite` (no further quantization)",
         kdtf_tflite(qmodel, "float32")),
        ("q_kdtf_int8", "`quantize(\"int8\")` -> `kdtf.export.tflite(quantization=\"int8\")`",
         kdtf_tflite(qmodel, "int8")),
    ]
    rows = []
    for key, description, fn in paths:
        path = os.path.join(outdir, f"{key}.tflite")
        if os.path.exists(path):
            os.remove(path)
        row = {"key": key, "path": description}
        start = time.time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(path)
            row["convert_seconds"] = time.time() - start
            report = verify_lib.verify_tflite(
                path, model, x_test, y_test, num_latency_samples=latency_samples)
            row.update(status="ok", ops=_ops(path), int8_io=report.int8_io,
                       mean_abs_error=mean_abs_error(path, x_test, float_logits),
                       **_report_fields(report))
            log(f"  {key}: ok, {report.size_bytes} B, agreement {report.top1_agreement:.4f}, "
                f"max|err| {report.max_abs_error:.4f}, latency {report.latency_ms:.4f} ms")
        except Exception as e:  # noqa: BLE001 - record every failure
            row.update(status="failed", error=f"{type(e).__name__}: {e}",
                       traceback=traceback.format_exc(limit=6))
            log(f"  {key}: FAILED {short_error(row['error'])}")
        row["seconds"] = time.time() - start
        rows.append(row)
    return {"keras": keras_rows, "rows": rows}


# --------------------------------------------------------------- report
def _ms(values, scale=1.0, digits=2):
    v = scale * np.asarray(values, dtype=np.float64)
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {std:.{digits}f}"


def calibration_table(result):
    """Markdown table (mean ± std over seeds) of one `run_calibration` result."""
    lines = [
        "| calibration data (100 inputs) | agreement with float Keras (%) | test accuracy (%) "
        "| max abs logit error | mean abs logit error | calibration input range |",
        "|---|---|---|---|---|---|",
        f"| (float Keras model) | 100 | {100 * result['keras_accuracy']:.2f} | 0 | 0 | |",
    ]
    f32 = result["float32"]
    lines.append(
        f"| (float32 TFLite, no calibration) | {100 * f32['top1_agreement']:.2f} | "
        f"{100 * f32['accuracy']:.2f} | {f32['max_abs_error']:.2g} | "
        f"{result['float32_mean_abs_error']:.2g} | |")
    for key in result["sources"]:
        rows = [r for r in result["rows"] if r["source"] == key]
        lo = min(r["calibration_min"] for r in rows)
        hi = max(r["calibration_max"] for r in rows)
        lines.append(
            f"| {SOURCE_LABELS[key]} | {_ms([r['top1_agreement'] for r in rows], 100)} | "
            f"{_ms([r['accuracy'] for r in rows], 100)} | "
            f"{_ms([r['max_abs_error'] for r in rows], 1, 2)} | "
            f"{_ms([r['mean_abs_error'] for r in rows], 1, 3)} | [{lo:.2f}, {hi:.2f}] |")
    for key, reason in result["skipped"].items():
        lines.append(f"| {SOURCE_LABELS[key]} | skipped: {reason} | | | | |")
    return "\n".join(lines)


def native_table(result):
    """Markdown table of one `native_paths` result, and its errors in full."""
    k = result["keras"]
    q = k["quantized"]
    lines = [
        "| path | result | size (KiB) | agreement with float Keras (%) | max abs logit error "
        "| mean abs logit error | test accuracy (%) | latency (ms, batch 1) |",
        "|---|---|---|---|---|---|---|---|",
        f"| float Keras model (reference) | - | - | 100 | 0 | 0 | "
        f"{100 * k['float']['accuracy']:.2f} | - |",
        f"| `quantize(\"int8\")`, run in Keras (no export) | ok; quantized layers: "
        f"{', '.join(q['quantized_layers']) or 'none'} | - | {100 * q['top1_agreement']:.2f} | "
        f"{q['max_abs_error']:.3g} | {q['mean_abs_error']:.3g} | {100 * q['accuracy']:.2f} | - |",
    ]
    errors = {}  # error text -> [keys of the paths that raised it]
    for row in result["rows"]:
        if row["status"] == "ok":
            lines.append(
                f"| {row['path']} | ok | {row['size_bytes'] / 1024:.1f} | "
                f"{100 * row['top1_agreement']:.2f} | {row['max_abs_error']:.3g} | "
                f"{row['mean_abs_error']:.3g} | {100 * row['accuracy']:.2f} | "
                f"{row['latency_ms']:.4f} |")
        else:
            text = short_error(row["error"], limit=4000)
            errors.setdefault(text, []).append(row["key"])
            label = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[list(errors).index(text) % 26]
            lines.append(f"| {row['path']} | **failed**: error {label} | | | | | | |")
    if errors:
        lines += ["", "Errors as raised (whitespace collapsed, MLIR `loc(...)` call sites and "
                  "module dumps elided; verbatim text and tracebacks in the .json):", ""]
        for i, (text, keys) in enumerate(errors.items()):
            lines.append(f"- **Error {'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[i % 26]}** "
                         f"({', '.join(keys)}): `{text}`")
    return "\n".join(lines)


def ops_table(result):
    """Markdown list of the ops of every exported file of `native_paths`."""
    return "\n".join(
        f"- {row['key']}: {', '.join(row['ops'])}"
        for row in result["rows"] if row["status"] == "ok")


def machine():
    """A one-line description of this machine."""
    import tensorflow as tf

    return (f"{os.cpu_count()}-core CPU ({platform.machine()}, {platform.system()}), "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
            f"{platform.python_version()}")


def to_markdown(results, command, seconds):
    """The results file: a calibration section and/or a native-export section."""
    lines = ["# Int8 calibration data and Keras-native export paths", ""]
    lines += [f"Produced by `{command}` in {seconds / 60:.1f} min on {results['machine']}. "
              "Latencies are the median of batch-1 `invoke()` calls on that CPU, which was "
              "shared with another long-running study, so they are only indicative.", ""]
    calib = results.get("calibration", {})
    if calib:
        lines += ["## Calibration data for full-int8 TFLite export", "",
                  "`kdtf.export.tflite(model, quantization=\"int8\", representative_data=x_cal)`: "
                  "int8 weights and activations, float32 input and output. Each calibration "
                  "seed picks 100 real training inputs; the samplers are fitted/seeded on "
                  "those same 100 inputs and return 100 inputs. Metrics on the whole test "
                  "split, mean ± std (ddof 1) over the seeds; \"agreement\" is top-1 agreement "
                  "with the float Keras model, \"max/mean abs logit error\" the largest / "
                  "mean |int8 - float| logit over the test split and the 10 classes. Sources: "
                  "`Mixup(alpha=1)`, `CutMix(alpha=1)` (images only), `GaussianNoise("
                  "stddev=0.3)` (relative to the per-feature std of the 100), "
                  f"`GaussianMixture(num_components={GMM_COMPONENTS}, covariance=...)"
                  ".fit(x_real)`, `UniformBox()` (per-feature min/max of the 100); random: "
                  "`UniformBox(low, high)` with the min and max of the whole training set, "
                  "and i.i.d. N(0, 1). The last column is the min/max of the calibration "
                  "inputs over the seeds.", ""]
        for name, res in calib.items():
            s = res["setting"]
            lines += [f"### {name}: `{s['student']}` (ERM, {s['epochs']} epochs, "
                      f"{res['params']:,} parameters)", "",
                      f"Seeds {', '.join(map(str, res['seeds']))}; data range of the training "
                      f"inputs [{res['data_range'][0]:.2f}, {res['data_range'][1]:.2f}]; "
                      f"{res['test_size']} test inputs; float logits on the test split: mean "
                      f"|logit| {res['mean_abs_logit']:.2f}, max |logit| "
                      f"{res['max_abs_logit']:.2f}. Took {res['seconds']:.0f} s (training "
                      f"included). File sizes: float32 "
                      f"{res['float32']['size_bytes'] / 1024:.1f} KiB, int8 "
                      f"{np.mean([r['size_bytes'] for r in res['rows']]) / 1024:.1f} KiB.", "",
                      calibration_table(res), ""]
    native = results.get("native", {})
    if native:
        lines += ["## Keras-native export paths", "",
                  "Each path is tried on a trained MNIST-1D student; every file that converts "
                  "is run with LiteRT (`kdtf.export.verify.verify_tflite`) on the test split "
                  "and compared with the *float* Keras model. int8 paths calibrate on the "
                  "same 100 real training inputs (seed 0). Errors are quoted as raised.", ""]
        for name, res in native.items():
            fl = res["keras"]["float"]
            lines += [f"### {name}", "",
                      f"Float logits on the test split: mean |logit| {fl['mean_abs_logit']:.2f}, "
                      f"max |logit| {fl['max_abs_logit']:.2f}.", "", native_table(res), "",
                      "Ops in each file:", "", ops_table(res), ""]
            warns = res["keras"]["quantized"]["warnings"]
            if warns:
                lines += ["Warnings of `quantize(\"int8\")`: " + "; ".join(
                    f"`{w}`" for w in warns), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def run_part_calibration(datasets, args, log):
    out = {}
    for name in datasets:
        setting = SETTINGS[name]
        start = time.time()
        splits = load_splits(setting.dataset)
        model, _ = train_student(setting, splits, args.workdir, log=log)
        log(f"{name}: student ready ({time.time() - start:.0f} s)")
        res = run_calibration(
            model, splits, seeds=args.seeds, num_samples=args.num_samples,
            max_full_dim=args.max_full_dim,
            outdir=os.path.join(args.workdir, "calibration_tflite", name), log=log)
        res.update(setting=dataclasses.asdict(setting), params=int(model.count_params()),
                   test_size=int(len(splits.x_test)), seconds=time.time() - start)
        out[name] = res
    return out


def run_part_native(args, log):
    out = {}
    splits = load_splits("mnist1d")
    x_cal = real_subset(splits.x_train, args.num_samples, 0)
    for setting in (SETTINGS["mnist1d"], NATIVE_MLP):
        _, path = train_student(setting, splits, args.workdir, log=log)
        log(f"native export paths on {setting.student}")
        res = native_paths(path, splits, x_cal,
                           os.path.join(args.workdir, "native_tflite", setting.student),
                           latency_samples=args.latency_samples, log=log)
        res["setting"] = dataclasses.asdict(setting)
        out[f"MNIST-1D `{setting.student}` (ERM, {setting.epochs} epochs)"] = res
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", default="all", choices=("all", "calibration", "native"),
                        help="Which part of the study to run (default: both).")
    parser.add_argument("--datasets", default="mnist1d,mnist",
                        help="Comma-separated datasets of the calibration part.")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated calibration seeds.")
    parser.add_argument("--num_samples", type=int, default=100, help="Calibration inputs.")
    parser.add_argument("--max_full_dim", type=int, default=1000,
                        help="Largest input size for a full-covariance mixture.")
    parser.add_argument("--latency_samples", type=int, default=200,
                        help="Timed batch-1 invocations per file in the native part.")
    parser.add_argument("--workdir", default="runs",
                        help="Trained students, logs and .tflite files.")
    parser.add_argument("--output", default="", help="Markdown file (a .json is written beside).")
    args = parser.parse_args(argv)
    args.seeds = tuple(int(s) for s in args.seeds.split(",") if s)
    datasets = [d for d in args.datasets.split(",") if d]
    for d in datasets:
        if d not in SETTINGS:
            raise ValueError(f"--datasets: unknown {d!r}; valid: {sorted(SETTINGS)}.")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    start = time.time()
    results = {"machine": machine()}
    if args.part in ("all", "calibration"):
        results["calibration"] = run_part_calibration(datasets, args, log)
    if args.part in ("all", "native"):
        results["native"] = run_part_native(args, log)
    seconds = time.time() - start
    results["seconds"] = seconds
    command = "python -m studies.calibration " + " ".join(
        argv if argv is not None else sys.argv[1:])
    text = to_markdown(results, command.strip(), seconds)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.output)[0] + ".json", "w") as f:
            json.dump(results, f, indent=1, default=str)
    print(text)
    return results


if __name__ == "__main__":
    main()
