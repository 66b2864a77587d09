"""Exports a trained student (.keras) to TFLite (LiteRT) or SavedModel: `apps/export.py`.

`run(ExportConfig(model=..., output=...))` loads the model (safe mode, no
training configuration), writes the export with `kdtf.export` and returns its
report as text. TFLite exports can be quantized (dynamic, float16, full-integer
int8, calibrated on real or sampler-drawn inputs) and are verified on the test
split of `dataset`; an export below `min_agreement` raises and is kept as
`<output>.failed.tflite`. The fields of `ExportConfig` are the app's flags
(`kdtf.cli.define_flags`), their checks its flag validators.

Example:

    from pipeline import export
    print(export.run(export.ExportConfig(model="runs/student.keras",
                                         output="runs/student_int8.tflite",
                                         quantization="int8")))
"""
import dataclasses
import os

FORMATS = ("tflite", "saved_model")
QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
CALIBRATION_SOURCES = ("real", "mixup", "cutmix", "noise", "gmm", "uniform")


def _setting(help, **flag):
    """An `ExportConfig` field: its default (none: a required flag), `--help` line and checks."""
    default = {"default": flag.pop("default")} if "default" in flag else {}
    return dataclasses.field(**default, metadata={"help": help, **flag})


def _require(ok, message):
    if not ok:
        raise ValueError(message)


def _check_model(path):
    _require(isinstance(path, str) and os.path.isfile(path) and path.endswith(".keras"),
             "must be an existing .keras file")


def _check_output(path):
    _require(isinstance(path, str) and bool(path)
             and os.path.isdir(os.path.dirname(os.path.abspath(path))),
             "its parent directory must exist")


def _check_int8_io(int8_io, quantization):
    _require(not int8_io or quantization == "int8", "--int8_io requires --quantization=int8")


def _check_min_agreement(min_agreement, verify, format):
    _require(min_agreement is None or (verify and format == "tflite"),
             "--min_agreement applies to verified --format=tflite exports: drop it, or drop "
             "--noverify")


def _check_format(format, quantization):
    _require(format == "tflite" or quantization == "none",
             "--format=saved_model supports only --quantization=none")


@dataclasses.dataclass
class ExportConfig:
    """Settings of an export (the flags of `apps/export.py`; `help` says what each does).

    The fields with checks come in the order the checks run (int8_io,
    min_agreement, format), which decides which error a command with several
    bad flags reports first.
    """

    model: str = _setting(
        "Path to the trained student model, a .keras file. It is loaded with "
        "keras safe_mode=True (no arbitrary code) and without its training "
        "configuration.", check=_check_model)
    output: str = _setting(
        "Destination: a .tflite file for --format=tflite, a directory for "
        "--format=saved_model. Written atomically; its parent directory must "
        "exist. An existing output is kept unless --overwrite is given.", check=_check_output)
    int8_io: bool = _setting(
        "With --quantization=int8, also make the model input and output int8 "
        "(callers quantize inputs with the input scale and zero point), as "
        "integer-only accelerators require.",
        default=False, check=_check_int8_io, check_with=("quantization",))
    min_agreement: float = _setting(
        "The top-1 agreement with the Keras model on the test split that the "
        "verified .tflite file must reach, as a fraction (0.97 = 97%). Default: "
        "0.999 for --quantization=none, 0.99 for float16 and dynamic, 0.97 for "
        "int8; 0 disables the check. Below it the app exits with status 1 and "
        "the file is kept as <output>.failed.tflite, not written to --output.",
        default=None, type=float, lower_bound=0.0, upper_bound=1.0,
        check=_check_min_agreement, check_with=("verify", "format"))
    format: str = _setting(
        "Export format: 'tflite' writes a LiteRT flatbuffer for mobile/edge "
        "runtimes; 'saved_model' writes a TensorFlow SavedModel with a "
        "'serving_default' signature (input 'inputs', output 'logits').",
        default="tflite", choices=FORMATS, check=_check_format, check_with=("quantization",))
    quantization: str = _setting(
        "TFLite quantization: 'none' keeps float32; 'dynamic' stores weights "
        "as int8 and computes in float; 'float16' stores weights as float16; "
        "'int8' quantizes weights and activations to int8 (full-integer ops), "
        "calibrated on --num_calibration training samples of --dataset. Only "
        "'none' is valid with --format=saved_model.", default="none", choices=QUANTIZATIONS)
    dataset: str = _setting(
        "Data for int8 calibration (training split) and verification (test "
        "split): a dataset name known to kdtf.data (e.g. 'mnist1d'), or a .npz "
        "file with arrays x_train and x_test (optionally y_train, y_test).", default="mnist1d")
    num_calibration: int = _setting(
        "Number of training samples used to calibrate int8 activation ranges "
        "(the first N of the training split).", default=100, lower_bound=1)
    calibration_source: str = _setting(
        "Where the --num_calibration int8 calibration inputs come from: 'real' "
        "training inputs, or as many synthetic inputs drawn by a kdtf.samplers "
        "sampler fitted to (or mixing) those real inputs: mixup, cutmix (images "
        "only), noise (Gaussian kernel density), gmm (Gaussian mixture), uniform "
        "(per-feature box). Real inputs calibrate best (README, calibration "
        "study); samplers are for when only a fitted data model may be shipped.",
        default="real", choices=CALIBRATION_SOURCES)
    verify: bool = _setting(
        "Run the exported .tflite file with LiteRT on the test split of "
        "--dataset and print agreement, accuracy, size and latency. Use "
        "--noverify to skip (no dataset needed unless --quantization=int8).", default=True)
    overwrite: bool = _setting(
        "Replace an existing --output. Without it an existing output is an "
        "error and is left untouched.", default=False)

    def validate(self):
        """Raises ValueError naming the flag of the first bad setting; returns self."""
        from kdtf import cli

        return cli.check_fields(self)


def load_dataset(name):
    """Returns `(x_train, y_train, x_test, y_test)` for `--dataset`.

    A .npz path is read here; any other name is `kdtf.data.load(name)`.
    `y_*` may be None.
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
    from kdtf import data as kdtf_data

    splits = kdtf_data.load(name)
    return splits.x_train, splits.y_train, splits.x_test, splits.y_test


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


def _representative(cfg, x_train, model):
    """The int8 calibration data: real inputs, or `(sampler, real inputs)`."""
    representative = _match_input(x_train[:cfg.num_calibration], model, "training")
    if cfg.calibration_source == "real":
        return representative
    from kdtf import samplers

    sampler = samplers.get(cfg.calibration_source, seed=0)
    if hasattr(sampler, "validate"):
        sampler.validate(representative.shape[1:])
    if hasattr(sampler, "fit"):
        sampler.fit(representative)
    return sampler, representative


def run(cfg):
    """Performs the export `cfg` describes; returns its report as a str.

    Args:
        cfg: an `ExportConfig` (validated here).

    Returns:
        The `kdtf.export` report (TFLite: agreement, accuracy, size,
        latency) or the SavedModel's path and signature.
    """
    from kdtf import export

    from pipeline import experiment

    cfg.validate()
    model = experiment.load_model(cfg.model, "--model", compile=False)
    if cfg.format == "saved_model":
        path = export.saved_model(model, cfg.output, overwrite=cfg.overwrite)
        return (f"SavedModel written to {path} (signature 'serving_default': "
                "'inputs' -> 'logits')")

    int8 = cfg.quantization == "int8"
    x_train = x_test = y_test = None
    if cfg.verify or int8:
        x_train, _, x_test, y_test = load_dataset(cfg.dataset)
    report = export.tflite(
        model,
        cfg.output,
        quantization=None if cfg.quantization == "none" else cfg.quantization,
        representative_data=_representative(cfg, x_train, model) if int8 else None,
        int8_io=cfg.int8_io,
        overwrite=cfg.overwrite,
        verify_data=_match_input(x_test, model, "test") if cfg.verify else None,
        verify_labels=y_test if cfg.verify else None,
        min_agreement=cfg.min_agreement,
    )
    return str(report)
