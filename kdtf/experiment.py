"""End-to-end runs behind the apps: train a teacher, distil, evaluate, export.

The apps in `apps/` only parse and validate flags; everything they do lives
here, so the same runs are available from Python:

```python
import kdtf
cfg = kdtf.experiment.RunConfig(method="dist", epochs=30)
result = kdtf.experiment.run(cfg)
print(result["students"]["dist"]["accuracy"])
```
"""
import dataclasses
import hashlib
import json
import os
import sys
import time

import keras
import numpy as np

from kdtf import callbacks as callbacks_lib
from kdtf import data as data_lib
from kdtf import losses as losses_lib
from kdtf import metrics as metrics_lib
from kdtf import models as models_lib
from kdtf.distiller import Distiller

# Methods that `distill` knows; "none" trains the student on labels only (ERM).
METHODS = ("none", "kd", "dist", "extracurricular", "fitnets", "sskd")
SAMPLERS = ("mixup", "cutmix", "noise", "gmm", "uniform")


@dataclasses.dataclass
class RunConfig:
    """Settings of one distillation run (the flags of `apps/distill.py`).

    Attributes:
        method: one of `METHODS`.
        dataset: a `kdtf.data.load` name.
        teacher: a `kdtf.models` name (trained here, or reused from
            `workdir`) or a path to a trained `.keras` teacher.
        student: a `kdtf.models` name.
        epochs: student training epochs.
        teacher_epochs: epochs when the teacher has to be trained.
        batch_size: global batch size.
        learning_rate: peak Adam learning rate (cosine decay to 0).
        weight_decay: AdamW weight decay (0 for plain Adam).
        temperature: distillation temperature.
        student_loss_weight: weight of the task loss; distillation gets 1 - w.
        label_fraction: share of training labels used (stratified), in (0, 1].
        seed: seed of initialisation, data order and sampling.
        workdir: where teachers, checkpoints, TensorBoard logs and results go.
        compare_erm: also train an ERM student (method "none") to compare.
        export: path of a TFLite file to export the distilled student to, or
            "" for none.
        quantization: TFLite quantization (None, "dynamic", "float16", "int8").
        verbose: Keras progress (0 silent, 1 bar, 2 a line per epoch).
        sampler: synthetic-input sampler of "extracurricular" (`SAMPLERS`).
        synthetic_loss_weight: weight of the distillation loss on synthetic
            inputs relative to real ones.
        synthetic_ratio: synthetic examples per real example in each batch.
        feature_weight: weight of the FitNets feature loss (method "fitnets").
        stages: stage endpoints for "fitnets" / "sskd": comma-separated
            layer names shared by both models ("stage1,stage2") or
            "teacher_layer:student_layer" pairs; "" for the models' own
            stage endpoints ("fitnets" uses the middle one).
        stage_epochs: epochs of each SSKD backbone phase; `epochs` is then
            the number of epochs of the head phase.
        deterministic: make TensorFlow ops deterministic, so the same
            settings give bit-identical weights on the same machine.
        strategy: "none", "mirrored" (this machine's devices) or
            "multi_worker" (`TF_CONFIG` cluster); see `kdtf.distribute`.
            `batch_size` stays the global batch. Only the chief worker
            writes exports and students; others keep their checkpoints in
            `workdir/workers/<index>`.
        dist_global_batch: DIST's intra-class term over the global batch
            instead of each replica's (see `kdtf.losses.DIST`).
    """

    method: str = "kd"
    dataset: str = "mnist1d"
    teacher: str = "mnist1d_cnn"
    student: str = "mnist1d_mlp"
    epochs: int = 60
    teacher_epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    temperature: float = 4.0
    student_loss_weight: float = 0.5
    label_fraction: float = 1.0
    seed: int = 0
    workdir: str = "runs"
    compare_erm: bool = True
    export: str = ""
    quantization: str = None
    verbose: int = 2
    sampler: str = "mixup"
    synthetic_loss_weight: float = 1.0
    synthetic_ratio: float = 1.0
    feature_weight: float = 1.0
    stages: str = ""
    stage_epochs: int = 10
    deterministic: bool = True
    strategy: str = "none"
    dist_global_batch: bool = False

    def validate(self):
        """Raises ValueError naming the first bad setting."""
        _check_choice("method", self.method, METHODS)
        _check_choice("dataset", self.dataset, data_lib.available(), prefixes=("tfds:", "npz:"))
        if not os.path.exists(self.teacher):
            if self.teacher.endswith(".keras"):
                raise FileNotFoundError(f"teacher: no such file {self.teacher!r}.")
            _check_choice("teacher", self.teacher, models_lib.available())
        _check_choice("student", self.student, models_lib.available())
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if self.teacher_epochs < 0:
            raise ValueError(f"teacher_epochs must be >= 0; got {self.teacher_epochs}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}.")
        if not 0 <= self.student_loss_weight <= 1:
            raise ValueError(
                f"student_loss_weight must be in [0, 1]; got {self.student_loss_weight}."
            )
        _check_choice("sampler", self.sampler, SAMPLERS)
        if self.synthetic_loss_weight < 0 or self.synthetic_ratio < 0:
            raise ValueError("synthetic_loss_weight and synthetic_ratio must be >= 0.")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1]; got {self.label_fraction}.")
        if not self.feature_weight >= 0:
            raise ValueError(f"feature_weight must be >= 0; got {self.feature_weight}.")
        if int(self.stage_epochs) < 1:
            raise ValueError(f"stage_epochs must be >= 1; got {self.stage_epochs}.")
        parse_stages(self.stages)
        if self.export:
            # Checked now: the export is written only after all the training.
            parent = os.path.dirname(os.path.abspath(self.export))
            if not os.path.isdir(parent) and parent != os.path.abspath(self.workdir):
                raise FileNotFoundError(
                    f"export: the directory of {self.export!r} does not exist ({parent}); "
                    "create it, or export into --workdir."
                )
        from kdtf import distribute

        _check_choice("strategy", self.strategy, distribute.STRATEGIES)
        if self.strategy != "none" and self.method == "sskd":
            raise ValueError(
                "strategy: SSKD runs on one device for now; use --strategy=none with "
                "--method=sskd (kd, dist, extracurricular and fitnets distribute)."
            )
        return self


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


def _check_choice(name, value, valid, prefixes=()):
    if value in valid or any(str(value).startswith(p) for p in prefixes):
        return
    extra = f" or a name starting with {', '.join(prefixes)}" if prefixes else ""
    raise ValueError(f"{name}: unknown value {value!r}; valid values: {', '.join(valid)}{extra}.")


# --------------------------------------------------------------------- pieces
def load_data(cfg):
    """Returns `(full, labelled)`: all of `cfg.dataset`, and the student's view.

    The teacher learns from `full`; students see `cfg.label_fraction` of the
    training labels (a stratified subset; the other inputs are unused).
    """
    full = data_lib.load(cfg.dataset, seed=0)
    if cfg.label_fraction < 1:
        return full, full.label_budget(cfg.label_fraction, seed=cfg.seed)
    return full, full


def _optimizer(cfg, steps):
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, steps))
    if cfg.weight_decay:
        return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(schedule)


def _task_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def seed_everything(cfg):
    """Seeds Python, NumPy and the backend; with `cfg.deterministic`, makes
    TensorFlow's ops deterministic too (same seed, same bits)."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def fingerprint(cfg, **overrides):
    """A short hash of the settings that determine a training run's result.

    Display, output and comparison settings (verbose, export, quantization,
    compare_erm, workdir) are left out, so changing them keeps a backup
    valid; anything else gives another run directory.
    """
    settings = {**dataclasses.asdict(cfg), **overrides}
    for key in ("verbose", "export", "quantization", "compare_erm", "workdir", "deterministic",
                "strategy"):
        settings.pop(key, None)
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


# TensorBoard gets every logged loss term and the learning rate every this many steps.
TENSORBOARD_UPDATE_FREQ = 1


def _tensorboard(log_dir, per_model=False):
    """TensorBoard with per-step loss terms (`batch_*`), plus the learning rate."""
    board = callbacks_lib.PhaseTensorBoard if per_model else keras.callbacks.TensorBoard
    return [
        board(log_dir, update_freq=TENSORBOARD_UPDATE_FREQ),
        callbacks_lib.LearningRateLogger(log_dir, TENSORBOARD_UPDATE_FREQ, per_model=per_model),
    ]


def _callbacks(cfg, run_name, fp):
    """TensorBoard logs and an atomic per-epoch backup (resumes after a crash)."""
    from kdtf import distribute

    # Other workers than the chief keep their logs and backups to themselves.
    run_dir = os.path.join(distribute.worker_dir(cfg.workdir), f"{run_name}_{fp}")
    return [
        *_tensorboard(os.path.join(run_dir, "tensorboard")),
        callbacks_lib.BackupAndRestore(os.path.join(run_dir, "backup"), fingerprint=fp),
        callbacks_lib.LeakGuard(),
    ]


def _build_model(name, splits, seed):
    keras.utils.set_random_seed(seed)
    return models_lib.get(name, input_shape=splits.input_shape, num_classes=splits.num_classes)


def _datasets(cfg, splits, seed):
    from kdtf import distribute

    # Every worker shuffles alike and takes its share of each global batch.
    train = distribute.shard_by_data(data_lib.make_dataset(
        splits.x_train, splits.y_train, batch_size=cfg.batch_size, shuffle=True, seed=seed
    ))
    val = distribute.shard_by_data(data_lib.make_dataset(splits.x_val, splits.y_val, batch_size=512))
    return train, val


def teacher_path(cfg):
    """Where the teacher of `cfg` is cached (or `cfg.teacher` if it is a file)."""
    if os.path.exists(cfg.teacher) or cfg.teacher.endswith(".keras"):
        return cfg.teacher
    name = f"{cfg.dataset.replace(':', '_').replace('/', '_')}_{cfg.teacher}_e{cfg.teacher_epochs}_s{cfg.seed}"
    return os.path.join(cfg.workdir, "teachers", name + ".keras")


def train_teacher(cfg, splits, path=None):
    """Trains `cfg.teacher` on `splits` and saves it atomically to `path`."""
    path = path or teacher_path(cfg)
    from kdtf import distribute

    teacher = distribute.enable_multi_worker(_build_model(cfg.teacher, splits, cfg.seed))
    train, val = _datasets(cfg, splits, cfg.seed)
    teacher.compile(
        optimizer=_optimizer(cfg, cfg.teacher_epochs * len(train)),
        loss=_task_loss(),
        metrics=["accuracy"],
    )
    _log(cfg, f"training teacher {cfg.teacher} on {cfg.dataset} for {cfg.teacher_epochs} epochs")
    teacher.fit(
        train, validation_data=val, epochs=cfg.teacher_epochs, verbose=cfg.verbose, shuffle=False,
        callbacks=_callbacks(cfg, f"teacher_{os.path.basename(path)[:-6]}",
                             fingerprint(cfg, role="teacher", path=os.path.abspath(path))),
    )
    save_model_atomic(teacher, _own_path(cfg, path))
    return teacher


def load_or_train_teacher(cfg, splits):
    """Returns the teacher: loaded from its file, or trained and cached."""
    path = teacher_path(cfg)
    if os.path.exists(path):
        _log(cfg, f"reusing teacher {path}")
        return load_model(path, "teacher")
    if os.path.exists(cfg.teacher) or cfg.teacher.endswith(".keras"):
        raise FileNotFoundError(f"teacher: no such file {cfg.teacher!r}.")
    return train_teacher(cfg, splits, path)


def load_model(path, arg="model"):
    """Loads a `.keras` file in safe mode, with errors that name `arg`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{arg}: no such file {path!r}.")
    import kdtf

    kdtf.register_all()
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # corrupted, truncated or unsafe files
        raise ValueError(f"{arg}: could not load {path!r} as a .keras model: {e}") from e


def save_model_atomic(model, path, overwrite=True):
    """Saves `model` to `path` so that a crash never leaves a partial file."""
    from kdtf.backend import memory
    from kdtf.export.atomic import atomic_path

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path, overwrite=overwrite) as tmp:
        model.save(tmp + ".keras")
        os.replace(tmp + ".keras", tmp)
    memory.share_saving_skipsets()


def make_sampler(cfg, x_train):
    """The sampler `cfg.sampler`, fitted to `x_train` where it needs fitting."""
    from kdtf import samplers

    sampler = samplers.get(cfg.sampler, seed=cfg.seed)
    if hasattr(sampler, "fit"):
        sampler.fit(x_train)
    return sampler


def make_distiller(cfg, teacher, student, method, x_train=None, sampler=None):
    """The `Distiller` of `method` with the settings of `cfg`.

    "extracurricular" matches the teacher's categorical output distribution
    (temperature-softened KL, as KD) on the real batch and on as many
    synthetic inputs from `cfg.sampler` (fitted to `x_train` if needed), or
    from `sampler` when one is given.
    """
    if method == "fitnets":
        from kdtf import stagewise
        from kdtf.losses.feature import FeatureMSE

        names = check_stages(teacher, student, parse_stages(cfg.stages))
        if names is None:
            pair = (stagewise.middle_stage(teacher), stagewise.middle_stage(student))
        elif len(names[0]) == 1:
            pair = (names[0][0], names[1][0])
        else:
            raise ValueError(f"stages: fitnets matches one stage; got {cfg.stages!r}.")
        return Distiller(
            teacher=teacher, student=student,
            distillation_losses=[FeatureMSE(*pair)],
            distillation_loss_weights=[cfg.feature_weight],
            student_loss_weight=cfg.student_loss_weight,
            seed=cfg.seed,
        )
    if method in ("kd", "extracurricular"):
        loss = losses_lib.KD(temperature=cfg.temperature)
    elif method == "dist":
        loss = losses_lib.DIST(temperature=cfg.temperature, global_batch=cfg.dist_global_batch)
    else:
        raise ValueError(
            f"method: {method!r} is not a distillation method; valid: "
            f"{', '.join(m for m in METHODS if m not in ('none', 'sskd'))}."
        )
    if method == "extracurricular":
        if sampler is None:
            sampler = make_sampler(cfg, x_train)
    else:
        sampler = None
    return Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=loss,
        student_loss_weight=cfg.student_loss_weight,
        sampler=sampler,
        synthetic_loss_weight=cfg.synthetic_loss_weight,
        synthetic_ratio=cfg.synthetic_ratio,
        seed=cfg.seed,
    )


def train_student(cfg, splits, teacher, method, sampler=None):
    """Trains a fresh `cfg.student` with `method`; returns (student, history).

    `sampler` replaces `cfg.sampler` for "extracurricular" (e.g. a fitted
    `kdtf.samplers.Pool` of unlabelled inputs).
    """
    student = _build_model(cfg.student, splits, cfg.seed + 1)
    if method == "sskd":
        return student, _train_sskd(cfg, splits, teacher, student)
    train, val = _datasets(cfg, splits, cfg.seed)
    if method == "none":
        from kdtf import distribute

        model = distribute.enable_multi_worker(student)
    else:
        model = make_distiller(cfg, teacher, student, method, splits.x_train, sampler=sampler)
    model.compile(
        optimizer=_optimizer(cfg, cfg.epochs * len(train)),
        loss=_task_loss(),
        metrics=["accuracy"],
    )
    _log(cfg, f"training student {cfg.student} with method={method} for {cfg.epochs} epochs")
    history = model.fit(
        train, validation_data=val, epochs=cfg.epochs, verbose=cfg.verbose, shuffle=False,
        callbacks=_callbacks(cfg, f"student_{method}_{cfg.student}_s{cfg.seed}",
                             fingerprint(cfg, method=method,
                                         sampler_object=sampler.get_config() if sampler else None)),
    )
    return student, history.history


def _train_sskd(cfg, splits, teacher, student):
    """SSKD: `cfg.stage_epochs` per backbone stage, then `cfg.epochs` of head.

    The backbone phases see every training input (labelled or not); the head
    phase sees the labelled ones. Returns the phases' histories, flattened
    to "<phase>/<metric>" keys.
    """
    from kdtf import stagewise

    stages = parse_stages(cfg.stages)
    check_stages(teacher, student, stages)
    run_dir = os.path.join(cfg.workdir, f"student_sskd_{cfg.student}_s{cfg.seed}")
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
        verbose=cfg.verbose, return_history=True,
    )
    return {f"{phase}/{k}": v for phase, h in histories.items() for k, v in h.items()}


def evaluate(model, splits, teacher=None, split="test"):
    """Accuracy, ECE and (given a teacher) agreement and KL on a split."""
    x, y = getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}")
    logits = model.predict(x, batch_size=512, verbose=0)
    out = {
        "accuracy": float(metrics_lib.accuracy(y, logits)),
        "ece": float(metrics_lib.expected_calibration_error(y, logits)),
        "params": int(model.count_params()),
    }
    if teacher is not None:
        t_logits = teacher.predict(x, batch_size=512, verbose=0)
        out["agreement"] = float(metrics_lib.agreement(t_logits, logits))
        out["kl_to_teacher"] = float(metrics_lib.kl_to_teacher(t_logits, logits))
    return out


def run(cfg):
    """Teacher (trained or reused), ERM student, distilled student, export.

    Returns:
        A dict with the config, the teacher's and each student's test metrics,
        the export report (if any) and the wall time; it is also written to
        `<workdir>/results/<method>_<student>_s<seed>.json`.
    """
    cfg.validate()
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
    teacher = load_or_train_teacher(cfg, full)
    result = {"config": dataclasses.asdict(cfg), "teacher": evaluate(teacher, full), "students": {}}
    if cfg.method in ("fitnets", "sskd"):  # fail on bad --stages before any training
        check_stages(teacher, _build_model(cfg.student, splits, cfg.seed + 1), parse_stages(cfg.stages))
    methods = [cfg.method]
    if cfg.compare_erm and cfg.method != "none":
        methods.insert(0, "none")
    trained = {}
    for method in methods:
        student, history = train_student(cfg, splits, teacher, method)
        trained[method] = student
        result["students"][method] = {
            **evaluate(student, splits, teacher),
            "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        }
    final = trained[cfg.method]
    for method, student in trained.items():  # every student, for apps/report.py
        path = os.path.join(cfg.workdir, "students", f"{method}_{cfg.student}_s{cfg.seed}.keras")
        save_model_atomic(student, _own_path(cfg, path))
    if cfg.export:
        from kdtf import export as export_lib

        report = export_lib.tflite(
            final,
            cfg.export,
            quantization=cfg.quantization,
            representative_data=splits.x_train[:100] if cfg.quantization == "int8" else None,
            verify_data=splits.x_test,
            verify_labels=splits.y_test,
            overwrite=True,
        )
        result["export"] = report.to_dict()
        result["export_summary"] = str(report)
    result["seconds"] = time.time() - start
    out = os.path.join(_worker_workdir(cfg), "results", f"{cfg.method}_{cfg.student}_s{cfg.seed}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)
    result["results_file"] = out
    return result


def summary(result):
    """A short human-readable table of a `run` result."""
    lines = [f"{'model':<22}{'accuracy':>9}{'agree':>8}{'KL':>8}{'ECE':>7}{'params':>10}"]
    t = result["teacher"]
    lines.append(f"{'teacher':<22}{t['accuracy']:>9.4f}{'':>8}{'':>8}{t['ece']:>7.3f}{t['params']:>10,}")
    names = {"none": "student (ERM)", "kd": "student (KD)", "dist": "student (DIST)",
             "extracurricular": f"student (EC, {result['config']['sampler']})"}
    for method, s in result["students"].items():
        lines.append(
            f"{names.get(method, 'student (' + method + ')'):<22}{s['accuracy']:>9.4f}"
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
    rows = {"teacher": [], **{m: [] for m in methods}, "details": []}
    for seed in seeds:
        run_cfg = dataclasses.replace(cfg, seed=seed, compare_erm=False, export="")
        run_cfg.validate()
        keras.utils.set_random_seed(seed)
        full, splits = load_data(run_cfg)
        teacher = load_or_train_teacher(run_cfg, full)
        rows["teacher"].append(evaluate(teacher, full)["accuracy"])
        for method in methods:
            student, _ = train_student(dataclasses.replace(run_cfg, method=method), splits, teacher, method)
            metrics = evaluate(student, splits, teacher)
            rows[method].append(metrics["accuracy"])
            rows["details"].append({"seed": seed, "method": method, **metrics})
            _log(cfg, f"seed {seed} {method}: test accuracy {metrics['accuracy']:.4f}")
    return rows


def study_table(rows, command=""):
    """A markdown table (mean +- std over seeds) of a `study` result."""
    names = {"teacher": "teacher", "none": "student, ERM (labels only)", "kd": "student, KD",
             "dist": "student, DIST", "extracurricular": "student, extracurricular"}
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
