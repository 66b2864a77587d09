r"""Exports a trained kdtf student (.keras) to TFLite (LiteRT) or SavedModel.

TFLite exports can be quantized (dynamic, float16, or full-integer int8) and
are verified on the test split of --dataset: top-1 agreement with the Keras
model, max output error, accuracy, file size and CPU latency are printed. An
export whose agreement is below --min_agreement (by default 99.9% for float32,
99% for float16 and dynamic, 97% for int8) ends the app with status 1 and is
kept as <output>.failed.tflite, not under --output.

Example:

  python apps/export.py --model=runs/student.keras \
      --output=runs/student_int8.tflite --format=tflite --quantization=int8 \
      --dataset=mnist1d --num_calibration=100
"""

import os
import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

from kdtf import cli  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

FORMATS = ("tflite", "saved_model")
QUANTIZATIONS = ("none", "dynamic", "float16", "int8")

_MODEL = flags.DEFINE_string(
    "model", None,
    "Path to the trained student model, a .keras file. It is loaded with "
    "keras safe_mode=True (no arbitrary code) and without its training "
    "configuration.")
_OUTPUT = flags.DEFINE_string(
    "output", None,
    "Destination: a .tflite file for --format=tflite, a directory for "
    "--format=saved_model. Written atomically; its parent directory must "
    "exist. An existing output is kept unless --overwrite is given.")
_FORMAT = flags.DEFINE_enum(
    "format", "tflite", FORMATS,
    "Export format: 'tflite' writes a LiteRT flatbuffer for mobile/edge "
    "runtimes; 'saved_model' writes a TensorFlow SavedModel with a "
    "'serving_default' signature (input 'inputs', output 'logits').")
_QUANTIZATION = flags.DEFINE_enum(
    "quantization", "none", QUANTIZATIONS,
    "TFLite quantization: 'none' keeps float32; 'dynamic' stores weights "
    "as int8 and computes in float; 'float16' stores weights as float16; "
    "'int8' quantizes weights and activations to int8 (full-integer ops), "
    "calibrated on --num_calibration training samples of --dataset. Only "
    "'none' is valid with --format=saved_model.")
_INT8_IO = flags.DEFINE_bool(
    "int8_io", False,
    "With --quantization=int8, also make the model input and output int8 "
    "(callers quantize inputs with the input scale and zero point), as "
    "integer-only accelerators require.")
_DATASET = flags.DEFINE_string(
    "dataset", "mnist1d",
    "Data for int8 calibration (training split) and verification (test "
    "split): a dataset name known to kdtf.data (e.g. 'mnist1d'), or a .npz "
    "file with arrays x_train and x_test (optionally y_train, y_test).")
_NUM_CALIBRATION = flags.DEFINE_integer(
    "num_calibration", 100,
    "Number of training samples used to calibrate int8 activation ranges "
    "(the first N of the training split).", lower_bound=1)
_CALIBRATION_SOURCE = flags.DEFINE_enum(
    "calibration_source", "real", ("real", "mixup", "cutmix", "noise", "gmm", "uniform"),
    "Where the --num_calibration int8 calibration inputs come from: 'real' "
    "training inputs, or as many synthetic inputs drawn by a kdtf.samplers "
    "sampler fitted to (or mixing) those real inputs: mixup, cutmix (images "
    "only), noise (Gaussian kernel density), gmm (Gaussian mixture), uniform "
    "(per-feature box). Real inputs calibrate best (README, calibration "
    "study); samplers are for when only a fitted data model may be shipped.")
_VERIFY = flags.DEFINE_bool(
    "verify", True,
    "Run the exported .tflite file with LiteRT on the test split of "
    "--dataset and print agreement, accuracy, size and latency. Use "
    "--noverify to skip (no dataset needed unless --quantization=int8).")
_MIN_AGREEMENT = flags.DEFINE_float(
    "min_agreement", None,
    "The top-1 agreement with the Keras model on the test split that the "
    "verified .tflite file must reach, as a fraction (0.97 = 97%). Default: "
    "0.999 for --quantization=none, 0.99 for float16 and dynamic, 0.97 for "
    "int8; 0 disables the check. Below it the app exits with status 1 and "
    "the file is kept as <output>.failed.tflite, not written to --output.",
    lower_bound=0.0, upper_bound=1.0)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Replace an existing --output. Without it an existing output is an "
    "error and is left untouched.")

flags.mark_flag_as_required("model")
flags.mark_flag_as_required("output")


def _model_exists(path):
    return path is None or (os.path.isfile(path) and path.endswith(".keras"))


def _output_parent_exists(path):
    if path is None:
        return True
    return bool(path) and os.path.isdir(
        os.path.dirname(os.path.abspath(path)))


flags.register_validator(
    "model", _model_exists, message="must be an existing .keras file")
flags.register_validator(
    "output", _output_parent_exists,
    message="its parent directory must exist")
flags.register_multi_flags_validator(
    ["int8_io", "quantization"],
    lambda f: not f["int8_io"] or f["quantization"] == "int8",
    message="--int8_io requires --quantization=int8")
flags.register_multi_flags_validator(
    ["min_agreement", "verify", "format"],
    lambda f: f["min_agreement"] is None or (f["verify"] and f["format"] == "tflite"),
    message="--min_agreement applies to verified --format=tflite exports: drop it, or drop "
    "--noverify")
flags.register_multi_flags_validator(
    ["format", "quantization"],
    lambda f: f["format"] == "tflite" or f["quantization"] == "none",
    message="--format=saved_model supports only --quantization=none")


def load_dataset(name):
    """Returns `(x_train, y_train, x_test, y_test)` for `--dataset`.

    Uses `kdtf.data.load(name)` when kdtf.data provides it; otherwise (or for
    a .npz path) a local fallback. `y_*` may be None.
    """
    import numpy as np

    if name.endswith(".npz"):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"--dataset file not found: {name!r}")
        with np.load(name) as data:
            missing = {"x_train", "x_test"} - set(data.files)
            if missing:
                raise ValueError(
                    f"--dataset file {name!r} lacks arrays {sorted(missing)}")
            get = lambda key: data[key] if key in data.files else None
            return get("x_train"), get("y_train"), get("x_test"), get("y_test")
    try:
        from kdtf import data as kdtf_data
        load = getattr(kdtf_data, "load", None)
    except ImportError:
        load = None
    if load is not None:
        splits = load(name)
        return splits.x_train, splits.y_train, splits.x_test, splits.y_test
    # Fallback until kdtf.data.load exists: MNIST-1D generated locally.
    if name != "mnist1d":
        raise ValueError(
            f"--dataset: unknown dataset {name!r}; valid values: 'mnist1d' or "
            "a .npz file")
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return data["x"], data["y"], data["x_test"], data["y_test"]


def _match_input(x, model, what):
    """Reshapes samples to the model input shape, e.g. (40,) -> (40, 1)."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    shape = tuple(model.inputs[0].shape[1:])
    if x.shape[1:] == shape:
        return x
    if int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        return x.reshape((len(x),) + shape)
    raise ValueError(
        f"--dataset {what} samples have shape {x.shape[1:]} but --model "
        f"expects {shape}")


def run(argv_flags):
    """Performs the export described by the parsed flags; returns a str."""
    from kdtf import export

    from pipeline import experiment

    model = experiment.load_model(argv_flags.model, "--model", compile=False)
    if argv_flags.format == "saved_model":
        path = export.saved_model(
            model, argv_flags.output, overwrite=argv_flags.overwrite)
        return (f"SavedModel written to {path} (signature 'serving_default': "
                "'inputs' -> 'logits')")

    quantization = argv_flags.quantization
    needs_data = argv_flags.verify or quantization == "int8"
    x_train = x_test = y_test = None
    if needs_data:
        x_train, _, x_test, y_test = load_dataset(argv_flags.dataset)
    representative = None
    if quantization == "int8":
        representative = _match_input(
            x_train[:argv_flags.num_calibration], model, "training")
        if argv_flags.calibration_source != "real":
            from kdtf import samplers

            sampler = samplers.get(argv_flags.calibration_source, seed=0)
            if hasattr(sampler, "validate"):
                sampler.validate(representative.shape[1:])
            if hasattr(sampler, "fit"):
                sampler.fit(representative)
            representative = (sampler, representative)
    verify_data = None
    if argv_flags.verify:
        verify_data = _match_input(x_test, model, "test")
    report = export.tflite(
        model,
        argv_flags.output,
        quantization=None if quantization == "none" else quantization,
        representative_data=representative,
        int8_io=argv_flags.int8_io,
        overwrite=argv_flags.overwrite,
        verify_data=verify_data,
        verify_labels=y_test if argv_flags.verify else None,
        min_agreement=argv_flags.min_agreement,
    )
    return str(report)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    print(run(flags.FLAGS))


if __name__ == "__main__":
    cli.run(main, interrupted="interrupted (Ctrl-C); nothing was written to --output (exports "
            "are atomic); rerun the same command to export.")
