"""Training throughput: kdtf.Distiller against keras.distillation and the bounds.

The logic behind `apps/benchmark.py`. In one process, with the same teacher
object, student architecture, data, batch size, precision, `jit_compile` and
`steps_per_execution`, it times:

* `student only`: `student.fit` on labels, no teacher (an upper bound);
* `teacher inference`: the teacher's compiled forward pass in inference mode,
  timed through `fit` of a model without trainable weights (no gradients, no
  update) so that it has the same per-step machinery as the others; `predict`
  would add a copy of every output to the host;
* `keras.distillation KD`: `keras.distillation.Distiller` with
  `LogitsDistillation(temperature, loss=keras.losses.KLDivergence())`. Its
  default `loss="kl_divergence"` is the plain function, which Keras applies to
  temperature-scaled *logits* rather than softmax probabilities (and without
  the tau^2 factor); the `KLDivergence` instance is the KD it is meant to run;
* `kdtf KD`, `kdtf DIST`, `kdtf EC` (extracurricular: a Mixup synthetic batch
  as large as the real one, also run through the teacher) and `kdtf cached KD`
  (teacher outputs from a `kdtf.caching.TeacherCache`, so no teacher pass);
* with the `methods` mode (not in the default run), one train step of every
  method of the registry `kdtf.methods` whose trainer is "distiller" (kd, dist,
  dkd, extracurricular, fitnets, at, rkd, pkt, crd, reviewkd, and any added
  later) plus KD with `logit_standardization`, each built as a run builds it:
  `pipeline.experiment.make_distiller` with a `RunConfig` carrying the pair's
  models, temperature 4, student_loss_weight 0.5, the seed and otherwise the
  registry's defaults (steps per epoch: examples // batch, for DKD's and
  ReviewKD's warm-ups). Where the default stage pairing refuses because the
  two models have different numbers of stages (AT, ReviewKD), the student's
  K stages are paired with the teacher's deepest K (ReviewKD also with the
  pooled `features`, as its default does), and the row says so. CRD's batches
  carry each example's index (`kdtf.batches`), its memory bank has a row per
  training example of the pair and it draws the registry's default number of
  negatives. A method the pair cannot run (e.g. FitNets or AT on a flat MLP
  student, which has no spatial maps) is listed as "not applicable" with the
  library's one-line reason. kd, dist and extracurricular reuse the `kdtf
  KD`, `kdtf DIST` and `kdtf EC` configurations (the same Distiller) when
  those are timed anyway. The methods table gives each one's step time and
  its step time relative to KD (the median of per-round ratios, since every
  round times them all). sskd (stage-by-stage phases) and none (the student
  only row) are not one Distiller step.

Every figure is training (or inference) images per second of *real* inputs,
the median over `rounds` rounds; each round times every configuration once,
in the same order (A B C ... A B C ...), so that drifts of the machine hit
all of them alike. Each measurement is one `fit` (or `predict`) call of
`steps` steps whose first execution (iterator start, prefetch fill) is left
out of the timing; compilation is done in a warm-up call before the first
round. Ratios are computed per round and their median is reported.

The bound a distiller can reach is `1 / (1 / student + 1 / teacher)` images/s:
one student training step plus one teacher forward per batch.

Inputs: image pairs take uint8 images, normalised inside the models
(`Rescaling(1/255)`, on the device); `memory` inputs repeat one ready batch,
`tfdata` inputs are the real `kdtf.data.make_dataset` (or
`TeacherCache.dataset`) pipeline with shuffling, gathering and, with
`augment`, random crop + flip of the uint8 images (done by tf.data on the
host CPU). With `augment`, `kdtf KD, augmented in step` does the same crop +
flip inside the compiled train step instead (`Distiller(augmentation=
kdtf.augmentation.RandomCropFlip(4))`, on the device), fed by a pipeline that
only batches. `tf.data pipeline alone` iterates that pipeline without a model:
when it is much faster than the training it feeds, the pipeline is not the
bottleneck.

Pairs: "mnist1d" and "cifar" use kdtf.models; "applications" is a pair a
user brings: `keras.applications.ResNet50` (teacher) ->
`keras.applications.MobileNetV3Small` (student), random weights
(`weights=None`), logits out (`classifier_activation=None`), on random uint8
ImageNet-shaped images (`applications_image_size`, 1000 classes).

With `time_budget_s`, no round starts that would end past the budget (and a
pair that would start past it is left out); the result then says what was
not run. `run(cfg, progress=...)` hands the result so far to `progress`
after every round, so that a run cut short still leaves its figures.

Peak memory is the process's peak resident set size during each timed call
(Linux: `/proc/self/status` VmHWM, reset through `/proc/self/clear_refs`
before each call; else the process-lifetime peak), and on a JAX GPU the
device's `peak_bytes_in_use` (never reset: a running maximum).
"""
import dataclasses
import importlib.util
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings

import numpy as np

from kdtf.backend.memory import PeakMemory

PAIRS = ("mnist1d", "cifar", "applications")
APPLICATIONS_TEACHER = "keras.applications.ResNet50"
APPLICATIONS_STUDENT = "keras.applications.MobileNetV3Small"
APPLICATIONS_CLASSES = 1000
MODES = ("kd", "dist", "extracurricular", "cached", "methods")
# The default run: "methods" adds about ten configurations (CRD's memory-bank
# gather is the slowest step of all), so it runs only when asked for.
DEFAULT_MODES = ("kd", "dist", "extracurricular", "cached")
INPUTS = ("memory", "tfdata")
IN_STEP = "kdtf KD, augmented in step"
UNFOLDED = "kdtf KD, teacher BatchNorm not folded"
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
JIT = ("auto", "true", "false")
TEMPERATURE = 4.0
STUDENT_LOSS_WEIGHT = 0.5


def _setting(default, help, **flag):
    """A `BenchConfig` field: its default, its `--help` line, choices, bounds and checks."""
    return dataclasses.field(default=default, metadata={"help": help, **flag})


def _choices(name, valid):
    """The `check` of a list setting: distinct names out of `valid` (`check_choices`)."""
    return lambda values: check_choices(name, values, valid)


@dataclasses.dataclass
class BenchConfig:
    """Settings of a benchmark run: the flags of `apps/benchmark.py` (`kdtf.cli.define_flags`).

    Each field's `help` says what it sets; `validate()` checks them all.
    """

    pairs: tuple = _setting(
        ("mnist1d", "cifar"),
        "Teacher/student pairs, comma-separated: 'mnist1d' = mnist1d_cnn -> mnist1d_mlp on "
        "the MNIST-1D training split (float32 signals); 'cifar' = --cifar_teacher -> "
        "--cifar_student on random uint8 32x32x3 images with 100 classes (speed only); "
        "'applications' = keras.applications ResNet50 -> MobileNetV3Small (random weights, "
        "logits out) on random uint8 --applications_image_size images with 1000 classes.",
        check=_choices("pairs", PAIRS))
    modes: tuple = _setting(
        DEFAULT_MODES,
        "kdtf configurations to time besides the baselines (student-only training, teacher "
        "inference, keras.distillation KD): 'kd' (always timed: the ratios refer to it), "
        "'dist' (DIST loss), 'extracurricular' (KD plus a Mixup synthetic batch as large as "
        "the real one), 'cached' (KD from teacher outputs cached once by "
        "kdtf.caching.TeacherCache; the cache build is timed separately), 'methods' (not in "
        "the default: one train step of every registered distillation method of "
        "kdtf.methods, built by pipeline.experiment.make_distiller with the registry's "
        "defaults, plus KD with logit standardization, in the same rounds as KD; a table of "
        "ms/step and step time x KD, and 'not applicable: <reason>' for a method the pair "
        "cannot run).",
        check=_choices("modes", MODES))
    inputs: tuple = _setting(
        INPUTS,
        "Input sources, comma-separated. 'memory' repeats one ready batch (no pipeline "
        "work; on JAX, device arrays converted once); 'tfdata' is the real kdtf.data "
        "pipeline (shuffle, gather, --augment; needs TensorFlow). Every "
        "configuration runs on the first source; student-only, kdtf KD and cached KD also on "
        "the others, plus the pipeline alone without a model.",
        check=_choices("inputs", INPUTS))
    batch_size: int = _setting(
        128, "Real examples per training step (the same for every configuration).",
        lower_bound=2)
    steps: int = _setting(
        30, "Timed steps per measurement; a multiple of --steps_per_execution, at least two "
        "executions (the first is not timed).",
        lower_bound=2, check=lambda steps, spe: check_steps(steps, spe),
        check_with=("steps_per_execution",))
    warmup_steps: int = _setting(
        6, "Steps of the untimed warm-up call of each configuration (tracing and compilation).",
        lower_bound=1)
    rounds: int = _setting(
        3, "Rounds: each round times every configuration once, in the same order (A B A B); "
        "figures are medians over rounds. Use >= 3 for reported figures.", lower_bound=1)
    steps_per_execution: int = _setting(
        1, "Keras steps_per_execution for every compile().", lower_bound=1)
    jit_compile: str = _setting(
        "auto", "Keras jit_compile (XLA) for every compile(); 'auto' lets Keras decide (off on "
        "CPU-only TensorFlow, on for JAX).", choices=JIT)
    precision: str = _setting(
        "float32", "Keras dtype policy of every model (logits stay float32).", choices=PRECISIONS)
    augment: bool = _setting(
        False,
        "Random crop (4 px) + horizontal flip of the uint8 images in the tf.data pipelines "
        "(image pairs only; MNIST-1D signals are not augmented). The teacher cache then "
        "stores --views augmented views per example. Also adds 'kdtf KD, augmented in step' "
        "(the same crop + flip inside the train step). Without TensorFlow only the latter "
        "runs, and the cache holds the fixed data.")
    views: int = _setting(
        4, "Augmented views per example in the teacher cache (with --augment).", lower_bound=1)
    cifar_teacher: str = _setting(
        "resnet20", "Teacher of the 'cifar' pair (a kdtf.models name).")
    cifar_student: str = _setting(
        "mnist_cnn_small", "Student of the 'cifar' pair (a kdtf.models name, built for 32x32x3 "
        "uint8 inputs and 100 classes).")
    cifar_examples: int = _setting(
        4096, "Examples in the random CIFAR-shaped training set.", lower_bound=2,
        check=lambda examples, batch_size: check_examples(examples, batch_size),
        check_with=("batch_size",))
    applications_image_size: int = _setting(
        224, "Image height and width of the 'applications' pair (224 as in ImageNet; smaller "
        "for a quick run).", lower_bound=32)
    applications_examples: int = _setting(
        256, "Examples in the random training set of the 'applications' pair (>= "
        "--batch_size).", lower_bound=2)
    seed: int = _setting(0, "Seed of the weights, data, shuffles and samplers.", lower_bound=0)
    time_budget_s: float = _setting(
        0.0, "Seconds the run may take (0: no limit): no round starts that would end past it "
        "and no pair starts once it is spent; the report says what was not run.",
        lower_bound=0.0)

    def validate(self):
        """Raises ValueError naming the first bad setting; returns self."""
        for name, valid in (("pairs", PAIRS), ("modes", MODES), ("inputs", INPUTS)):
            check_choices(name, getattr(self, name), valid)
        for name, minimum in (("batch_size", 2), ("steps", 2), ("warmup_steps", 1), ("rounds", 1),
                              ("steps_per_execution", 1), ("views", 1), ("cifar_examples", 2),
                              ("applications_image_size", 32), ("applications_examples", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
        check_steps(self.steps, self.steps_per_execution)
        check_examples(self.cifar_examples, self.batch_size)
        if "applications" in tuple(self.pairs):
            check_examples(self.applications_examples, self.batch_size, "applications_examples")
        budget = self.time_budget_s
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0:
            raise ValueError(f"time_budget_s must be a number >= 0 (0: no limit); got {budget!r}.")
        check_inputs_available(self.inputs)
        if self.jit_compile not in JIT:
            raise ValueError(f"jit_compile: unknown value {self.jit_compile!r}; valid: {', '.join(JIT)}.")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision: unknown value {self.precision!r}; valid: {', '.join(PRECISIONS)}.")
        from kdtf import models as models_lib

        for name in ("cifar_teacher", "cifar_student"):
            value = getattr(self, name)
            if value not in models_lib.available():
                raise ValueError(
                    f"{name}: unknown value {value!r}; valid values: "
                    f"{', '.join(models_lib.available())}.")
        return self


def check_choices(name, values, valid):
    """Raises ValueError unless `values` is a non-empty list of distinct `valid` names."""
    values = tuple(values)
    if not values:
        raise ValueError(f"{name}: give at least one of {', '.join(valid)}.")
    for value in values:
        if value not in valid:
            raise ValueError(f"{name}: unknown value {value!r}; valid values: {', '.join(valid)}.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: {', '.join(values)} names a value twice.")


def check_steps(steps, steps_per_execution):
    """Raises ValueError unless `steps` gives at least two whole executions."""
    spe = steps_per_execution
    if steps % spe or steps < 2 * spe:
        raise ValueError(
            f"steps must be a multiple of steps_per_execution={spe} and at least {2 * spe} "
            f"(the first execution is not timed); got {steps}.")


def tensorflow_available():
    """Whether TensorFlow imports here (a JAX-only machine has no tf.data)."""
    try:
        importlib.import_module("tensorflow")
    except ImportError:
        return False
    return True


def check_inputs_available(inputs):
    """Raises ValueError when `tfdata` is asked for without TensorFlow."""
    if "tfdata" in tuple(inputs) and not tensorflow_available():
        raise ValueError(
            "inputs: 'tfdata' (the kdtf.data tf.data pipeline) needs TensorFlow, which cannot be "
            "imported here; use inputs=memory (e.g. --inputs=memory on a JAX-only machine).")


def check_examples(examples, batch_size, name="cifar_examples"):
    """Raises ValueError when a random training set (`name`) is smaller than a batch."""
    if examples < batch_size:
        raise ValueError(f"{name} ({examples}) must be >= batch_size ({batch_size}).")


# ------------------------------------------------------------------ machine
def machine():
    """CPU model and core count (from /proc/cpuinfo where there is one)."""
    model, cores = platform.processor() or platform.machine(), os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        names = [l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")]
        if names:
            model = names[0]
            cores = len(names)
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    return {"cpu": model, "cores": cores}


def accelerator():
    """The accelerator Keras trains on, or "none (CPU)"."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            return "none (CPU)" if device.platform == "cpu" else f"{device.platform}: {device.device_kind}"
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return ", ".join(g.name for g in gpus) if gpus else "none (CPU)"
    except Exception:  # pragma: no cover - informational only
        return "unknown"


# ------------------------------------------------------------------- timing
def _timer_callback():
    import keras

    class Timer(keras.callbacks.Callback):
        """Times each execution's end; the first one is the reference."""

        def __init__(self):
            super().__init__()
            self.times = []

        def _mark(self, logs):
            if logs:  # wait for the device (JAX dispatches asynchronously)
                leaf = keras.tree.flatten(logs)[0]
                np.asarray(leaf)
            self.times.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            self._mark(logs)

        def on_predict_batch_end(self, batch, logs=None):
            self._mark(logs)

    return Timer()


@dataclasses.dataclass
class Contender:
    """One timed configuration."""

    name: str
    kind: str  # "fit", "predict" or "pipeline" (iterating the dataset alone)
    model: object
    dataset: object
    input: str = "memory"
    note: str = ""
    ips: list = dataclasses.field(default_factory=list)
    peak_rss_mib: list = dataclasses.field(default_factory=list)
    rss_growth_mib: list = dataclasses.field(default_factory=list)
    device_peak_mib: list = dataclasses.field(default_factory=list)
    skipped: str = ""

    @property
    def label(self):
        return f"{self.name} [{self.input}]"

    def run(self, steps, batch_size, steps_per_execution, memory=None):
        """Runs `steps` steps; returns images/s over all but the first execution."""
        self._rss_at_start = memory.reset() if memory is not None else None
        if self.kind == "pipeline":
            iterator = iter(self.dataset)
            times = []
            for _ in range(steps):
                next(iterator)
                times.append(time.perf_counter())
            per_call = 1
        else:
            timer = _timer_callback()
            if self.kind == "fit":
                self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps, verbose=0,
                               callbacks=[timer])
            else:
                self.model.predict(self.dataset, steps=steps, verbose=0, callbacks=[timer])
            times = timer.times
            per_call = steps_per_execution
        if len(times) < 2 or times[-1] <= times[0]:
            raise RuntimeError(f"{self.label}: too few timed executions ({len(times)}).")
        return batch_size * per_call * (len(times) - 1) / (times[-1] - times[0])

    def measure(self, steps, batch_size, steps_per_execution, memory):
        ips = self.run(steps, batch_size, steps_per_execution, memory)
        self.ips.append(ips)
        peak = memory.rss_peak_mib()
        self.peak_rss_mib.append(peak)
        if memory.resettable and self._rss_at_start is not None:
            self.rss_growth_mib.append(max(0.0, peak - self._rss_at_start))
        device = memory.device_peak_mib()
        if device is not None:
            self.device_peak_mib.append(device)
        return ips


# --------------------------------------------------------------- the pairs
def _pair_settings(cfg, pair):
    if pair == "mnist1d":
        return {"teacher": "mnist1d_cnn", "student": "mnist1d_mlp", "input_dtype": "float32",
                "data": "MNIST-1D training split (kdtf.data.load('mnist1d'))", "dataset": "mnist1d"}
    if pair == "applications":
        size = cfg.applications_image_size
        return {"teacher": APPLICATIONS_TEACHER, "student": APPLICATIONS_STUDENT,
                "input_dtype": "uint8",
                "data": f"{cfg.applications_examples} random uint8 {size}x{size}x3 images, "
                        f"{APPLICATIONS_CLASSES} classes (ImageNet-shaped); keras.applications "
                        "models with weights=None, classifier_activation=None"}
    return {"teacher": cfg.cifar_teacher, "student": cfg.cifar_student, "input_dtype": "uint8",
            "data": f"{cfg.cifar_examples} random uint8 32x32x3 images, 100 classes"}


def _load_data(cfg, pair):
    if pair == "mnist1d":
        from kdtf import data as data_lib

        splits = data_lib.load("mnist1d", seed=0)
        return splits.x_train, splits.y_train.astype("int32"), (40,), 10
    rng = np.random.default_rng(cfg.seed)
    if pair == "applications":
        shape = (cfg.applications_image_size, cfg.applications_image_size, 3)
        x = rng.integers(0, 256, size=(cfg.applications_examples,) + shape, dtype=np.uint8)
        y = rng.integers(0, APPLICATIONS_CLASSES, size=len(x)).astype("int32")
        return x, y, shape, APPLICATIONS_CLASSES
    x = rng.integers(0, 256, size=(cfg.cifar_examples, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 100, size=cfg.cifar_examples).astype("int32")
    return x, y, (32, 32, 3), 100


def _build(name, input_shape, num_classes, input_dtype, seed):
    import keras

    from kdtf import models as models_lib

    keras.utils.set_random_seed(seed)
    if name.startswith("keras.applications."):
        return applications_model(name, input_shape, num_classes)
    kwargs = {"input_dtype": input_dtype} if input_dtype != "float32" else {}
    return models_lib.get(name, input_shape=input_shape, num_classes=num_classes, **kwargs)


def applications_model(name, input_shape, num_classes=APPLICATIONS_CLASSES):
    """A `keras.applications` model on uint8 images: random weights, logits out.

    The model a user brings, built as they would: `weights=None`,
    `classifier_activation=None`, one flat functional graph from a uint8
    input. ResNet50 gets a `Rescaling(1/127.5, offset=-1)` in front (it has
    no preprocessing of its own); MobileNetV3Small keeps its own
    (`include_preprocessing=True`, the same rescaling). Either layer casts
    the bytes to the compute dtype on the device.

    Args:
        name: `APPLICATIONS_TEACHER` or `APPLICATIONS_STUDENT`.
        input_shape: `(size, size, 3)`, size >= 32.
        num_classes: classes of the classifier.

    Returns:
        A functional `keras.Model`.

    Example:
        >>> student = applications_model(APPLICATIONS_STUDENT, (64, 64, 3))
    """
    import keras

    inputs = keras.Input(shape=input_shape, dtype="uint8", name="input")
    common = {"weights": None, "input_shape": tuple(input_shape), "classes": num_classes,
              "classifier_activation": None}
    if name == APPLICATIONS_TEACHER:
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inputs)
        model = keras.applications.ResNet50(input_tensor=x, **common)
    elif name == APPLICATIONS_STUDENT:
        model = keras.applications.MobileNetV3Small(input_tensor=inputs, include_preprocessing=True,
                                                    **common)
    else:
        model = None
    if model is not None:
        # Built from `input_tensor`, the model's inputs are a one-element
        # list; the same graph with the single input takes a plain tensor.
        return keras.Model(inputs, model.outputs[0], name=model.name)
    raise ValueError(f"unknown keras.applications model {name!r}; valid: "
                     f"{APPLICATIONS_TEACHER}, {APPLICATIONS_STUDENT}.")


def teacher_forward(teacher):
    """A model whose `fit` step is the teacher's forward pass alone.

    Timing teacher inference through `fit` (rather than `predict`, which
    also copies every output to the host) gives it the per-step machinery of
    the training configurations. The teacher has no trainable weights here,
    so there are no gradients and no update; the loss is the mean output so
    that the forward pass is not pruned away.
    """
    import keras

    class TeacherForward(keras.Model):
        def __init__(self, model, **kwargs):
            super().__init__(name="teacher_forward", **kwargs)
            self.model = model

        def call(self, x, training=False):
            return self.model(x, training=False)

    teacher.trainable = False
    return TeacherForward(teacher)


def _mean_output(y_true, y_pred):
    from keras import ops

    del y_true
    return ops.mean(ops.cast(y_pred, "float32"))


def _jit(cfg):
    return {"auto": "auto", "true": True, "false": False}[cfg.jit_compile]


def _check_backend(cfg):
    import keras

    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise ValueError(f"the benchmark runs on the tensorflow and jax backends; KERAS_BACKEND={backend!r}.")
    if backend == "jax" and importlib.util.find_spec("kdtf.backend.jax") is None:
        raise ValueError(
            "kdtf's Distiller has no JAX train step in this checkout (kdtf/backend/jax.py is "
            "missing), so kdtf cannot be benchmarked on JAX; run with KERAS_BACKEND=tensorflow.")
    return backend


def repeat_batch(batch):
    """An endless source of one ready batch, for `fit` on the current backend.

    TensorFlow: `tf.data.Dataset.from_tensors(batch).repeat()`. JAX: a
    generator of the batch as device arrays, converted once, so no step
    copies it from the host (a tf.data source would, through numpy).
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensors(batch).repeat()
    batch = keras.tree.map_structure(lambda a: keras.ops.convert_to_tensor(np.asarray(a)), batch)

    def forever():
        while True:
            yield batch

    return forever()


@dataclasses.dataclass
class FixedCache:
    """Teacher outputs on the fixed (unaugmented) data, without TensorFlow.

    What `kdtf.caching.TeacherCache.build(teacher, x)` stores (one view,
    float16), computed with `teacher.predict`, for machines without tf.data.
    """

    outputs: np.ndarray
    views: int = 1
    dtype: str = "float16"

    @classmethod
    def build(cls, teacher, x, batch_size):
        return cls(np.asarray(teacher.predict(x, batch_size=batch_size, verbose=0)).astype("float16"))

    @property
    def memory_bytes(self):
        return int(self.outputs.nbytes)

    def batch(self, x, y, batch_size):
        """The first `batch_size` examples as a cached batch `({inputs, teacher_outputs}, y)`."""
        from kdtf.distiller import CACHED_OUTPUTS_KEY, INPUTS_KEY

        return ({INPUTS_KEY: x[:batch_size], CACHED_OUTPUTS_KEY: self.outputs[:batch_size]},
                y[:batch_size])


class _Pair:
    """Models, data and contenders of one teacher/student pair."""

    def __init__(self, cfg, pair, log):
        import keras

        from kdtf import batches as batches_lib
        from kdtf import data as data_lib
        from kdtf import losses as losses_lib
        from kdtf import samplers as samplers_lib
        from kdtf.augmentation import RandomCropFlip
        from kdtf.distiller import Distiller
        from kdtf.folding import FoldedForward

        self.cfg, self.pair, self.log = cfg, pair, log
        self.settings = _pair_settings(cfg, pair)
        x, y, input_shape, num_classes = _load_data(cfg, pair)
        self.num_examples = len(x)
        dtype = self.settings["input_dtype"]
        teacher = _build(self.settings["teacher"], input_shape, num_classes, dtype, cfg.seed)
        self.teacher = teacher
        self.teacher_params = teacher.count_params()
        self.student_params = None
        b = cfg.batch_size
        is_image = len(input_shape) == 3
        self.augmented = bool(cfg.augment and is_image)
        # Without TensorFlow (a JAX-only GPU machine) there is no tf.data:
        # only `memory` inputs (validated), augmentation in the step alone,
        # and a teacher cache of the fixed data (one view).
        self.has_tf = tensorflow_available()
        augment = data_lib.Augment(seed=cfg.seed) if self.augmented and self.has_tf else None
        task_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        compile_kwargs = {"jit_compile": _jit(cfg), "steps_per_execution": cfg.steps_per_execution}

        def student():
            model = _build(self.settings["student"], input_shape, num_classes, dtype, cfg.seed + 1)
            self.student_params = model.count_params()
            return model

        def pipeline(augment=augment):
            return data_lib.make_dataset(x, y, batch_size=b, shuffle=True, seed=cfg.seed,
                                         augment=augment, drop_remainder=True, repeat=True)

        def in_memory(ds=None):
            batch = next(iter(ds)) if ds is not None else (x[:b], y[:b])
            return repeat_batch(batch)

        sources = {"tfdata": pipeline}
        sources["memory"] = lambda: in_memory(pipeline() if self.has_tf else None)

        self.cache = None
        self.cache_seconds = None
        if "cached" in cfg.modes:
            start = time.perf_counter()
            if self.has_tf:
                from kdtf.caching import TeacherCache

                views = cfg.views if self.augmented else 1
                self.cache = TeacherCache.build(teacher, x, views=views, augment=augment,
                                                batch_size=max(b, 256), seed=cfg.seed)
            else:
                self.cache = FixedCache.build(teacher, x, batch_size=max(b, 256))
            self.cache_seconds = time.perf_counter() - start

        def cached_source(kind):
            if not self.has_tf:
                return repeat_batch(self.cache.batch(x, y, b))
            ds = self.cache.dataset(y, batch_size=b, shuffle=True, seed=cfg.seed,
                                    drop_remainder=True, repeat=True)
            return in_memory(ds) if kind == "memory" else ds

        def kdtf_distiller(loss, sampler=None, augmentation=None, fold=True):
            d = Distiller(teacher=teacher, student=student(), distillation_losses=loss,
                          student_loss_weight=STUDENT_LOSS_WEIGHT, sampler=sampler,
                          synthetic_ratio=1.0, seed=cfg.seed, augmentation=augmentation,
                          fold_teacher_batchnorm=fold)
            d.compile(optimizer="adam", loss=task_loss, **compile_kwargs)
            return d

        def keras_distiller():
            d = keras.distillation.Distiller(
                teacher=teacher, student=student(),
                distillation_losses=keras.distillation.LogitsDistillation(
                    temperature=TEMPERATURE, loss=keras.losses.KLDivergence()),
                student_loss_weight=STUDENT_LOSS_WEIGHT)
            d.compile(optimizer="adam", loss=task_loss, **compile_kwargs)
            return d

        def registry_distiller(method, overrides):
            """`method`'s Distiller as a run builds it; returns (it, a note on its settings)."""
            from pipeline import experiment

            # The run defaults of the pair's dataset (MNIST-1D's own, e.g. CRD's negatives);
            # the random-image pairs are no kdtf dataset: the registry's defaults.
            run_cfg = experiment.RunConfig(
                dataset=self.settings.get("dataset", "random images"),
                teacher=self.settings["teacher"], student=self.settings["student"],
                batch_size=b, temperature=TEMPERATURE, student_loss_weight=STUDENT_LOSS_WEIGHT,
                seed=cfg.seed, **overrides)
            notes = [f"{k}={v}" for k, v in overrides.items()]
            build = lambda run_cfg: experiment.make_distiller(  # noqa: E731
                run_cfg, teacher, student(), method, x, steps_per_epoch=max(1, len(x) // b))
            try:
                d = build(run_cfg)
            except ValueError as error:
                # The default pairs the stages one to one: pair the deepest ones.
                stages = "one to one" in str(error) and aligned_stages(method, teacher, student())
                if not stages:
                    raise
                d = build(dataclasses.replace(run_cfg, stages=stages))
                notes.append(f"stages={stages}: the teacher's deepest stages, since the default "
                             "pairs the stages one to one and the two models have different "
                             "numbers")
            resolved = experiment.with_defaults(dataclasses.replace(run_cfg, method=method))
            if d.sampler is not None:
                sampler = d.sampler.get_config()
                notes.append(
                    f"sampler {resolved.sampler}" + (f" ({sampler['covariance']} covariance)"
                                                     if "covariance" in sampler else "")
                    + f", synthetic_ratio {resolved.synthetic_ratio:g}: "
                    f"{resolved.synthetic_ratio:g}x the real batch of synthetic inputs through "
                    "teacher and student (the registry defaults)")
            if d.needs_index:
                notes.append(f"memory bank of {len(x)} examples (the training set), "
                             f"{resolved.crd_negatives} negatives (the default of --method=crd "
                             f"on this data); batches carry each example's index")
            d.compile(optimizer="adam", loss=task_loss, **compile_kwargs)
            return d, "; ".join(notes)

        def indexed_source(kind):
            """Batches whose x is `kdtf.batches.make(inputs, index=...)` (CRD's bank)."""
            if not self.has_tf:
                return repeat_batch((batches_lib.make(x[:b], index=np.arange(b)), y[:b]))
            ds = data_lib.make_dataset(x, y, batch_size=b, shuffle=True, seed=cfg.seed,
                                       augment=augment, drop_remainder=True, repeat=True,
                                       index=True)
            return in_memory(ds) if kind == "memory" else ds

        def student_only():
            s = student()
            s.compile(optimizer="adam", loss=task_loss, **compile_kwargs)
            return s

        forward = teacher_forward(teacher)
        forward.compile(optimizer="sgd", loss=_mean_output, **compile_kwargs)
        first, others = cfg.inputs[0], cfg.inputs[1:]
        c = []
        c.append(Contender("student only", "fit", student_only(), sources[first](), first))
        c.append(Contender("teacher inference", "fit", forward, sources[first](), first,
                           note="forward only, inference mode, no gradients"))
        c.append(Contender("keras.distillation KD", "fit", keras_distiller(), sources[first](), first,
                           note="LogitsDistillation(temperature=4, loss=keras.losses.KLDivergence())"))
        kd = kdtf_distiller(losses_lib.KD(TEMPERATURE))
        c.append(Contender("kdtf KD", "fit", kd, sources[first](), first))
        if isinstance(kd._teacher_forward, FoldedForward):
            # What folding the teacher's BatchNorm (the default) buys.
            c.append(Contender(UNFOLDED, "fit",
                               kdtf_distiller(losses_lib.KD(TEMPERATURE), fold=False),
                               sources[first](), first,
                               note="fold_teacher_batchnorm=False"))
        if "dist" in cfg.modes:
            c.append(Contender("kdtf DIST", "fit", kdtf_distiller(losses_lib.DIST(TEMPERATURE)),
                               sources[first](), first))
        if "extracurricular" in cfg.modes:
            c.append(Contender(
                "kdtf EC", "fit",
                kdtf_distiller(losses_lib.KD(TEMPERATURE), samplers_lib.Mixup(seed=cfg.seed)),
                sources[first](), first, note="Mixup sampler, synthetic batch = real batch"))
        self.methods = []  # the methods table's entries (`methods_table`)
        if "methods" in cfg.modes:
            for row, method, overrides, name in method_entries():
                entry = {"method": row, "configuration": name, "note": "", "not_applicable": ""}
                self.methods.append(entry)
                if _find(c, name, first) is not None:
                    continue  # the same configuration is timed already (kd, dist, EC modes)
                try:
                    model, entry["note"] = registry_distiller(method, overrides)
                except ValueError as error:  # the library's refusal, e.g. no spatial maps
                    entry["not_applicable"] = one_line(error)
                    log(f"[{pair}] {row}: not applicable: {entry['not_applicable']}")
                    continue
                source = indexed_source(first) if model.needs_index else sources[first]()
                c.append(Contender(name, "fit", model, source, first, note=entry["note"]))
        if self.cache is not None:
            c.append(Contender("kdtf cached KD", "fit", kdtf_distiller(losses_lib.KD(TEMPERATURE)),
                               cached_source(first), first))
        for kind in cfg.inputs if self.augmented else ():
            # The same crop + flip, in the compiled step instead of tf.data:
            # the pipeline only batches the uint8 images.
            unaugmented = pipeline(None) if self.has_tf else None
            c.append(Contender(
                IN_STEP, "fit",
                kdtf_distiller(losses_lib.KD(TEMPERATURE),
                               augmentation=RandomCropFlip(4, seed=cfg.seed)),
                in_memory(unaugmented) if kind == "memory" else unaugmented, kind,
                note="kdtf.augmentation.RandomCropFlip inside the train step"))
        for kind in others:
            c.append(Contender("student only", "fit", student_only(), sources[kind](), kind))
            c.append(Contender("kdtf KD", "fit", kdtf_distiller(losses_lib.KD(TEMPERATURE)),
                               sources[kind](), kind))
            if self.cache is not None:
                c.append(Contender("kdtf cached KD", "fit",
                                   kdtf_distiller(losses_lib.KD(TEMPERATURE)),
                                   cached_source(kind), kind))
            if kind == "tfdata":
                c.append(Contender("tf.data pipeline alone", "pipeline", None, pipeline(), kind))
                if self.cache is not None:
                    c.append(Contender("tf.data cached pipeline alone", "pipeline", None,
                                       cached_source("tfdata"), kind))
        self.contenders = c

    def warm_up(self):
        cfg = self.cfg
        steps = -(-cfg.warmup_steps // cfg.steps_per_execution) * cfg.steps_per_execution
        steps = max(steps, 2 * cfg.steps_per_execution)
        for contender in self.contenders:
            start = time.perf_counter()
            contender.run(steps, cfg.batch_size, cfg.steps_per_execution)
            self.log(f"[{self.pair}] warm-up {contender.label}: {time.perf_counter() - start:.1f} s")


def _median(values):
    return statistics.median(values) if values else float("nan")


def _find(contenders, name, kind):
    for c in contenders:
        if c.name == name and c.input == kind:
            return c
    return None


def ratios(pair):
    """Per-round ratios (then their median) between the contenders of a pair."""
    cs, first = pair.contenders, pair.cfg.inputs[0]
    get = lambda name, kind=first: _find(cs, name, kind)  # noqa: E731
    student, teacher = get("student only"), get("teacher inference")
    keras_kd, kd = get("keras.distillation KD"), get("kdtf KD")
    out = []

    def add(label, fn, *contenders):
        if any(c is None or not c.ips for c in contenders):
            return
        rounds = [fn(*values) for values in zip(*(c.ips for c in contenders))]
        out.append((label, _median(rounds), rounds))

    bound = lambda s, t: 1.0 / (1.0 / s + 1.0 / t)  # noqa: E731
    add("kdtf KD / keras.distillation KD (images/s)", lambda a, b: a / b, kd, keras_kd)
    add("kdtf KD share of the bound 1/(1/student + 1/teacher)",
        lambda k, s, t: k / bound(s, t), kd, student, teacher)
    add("keras.distillation KD share of the bound", lambda k, s, t: k / bound(s, t),
        keras_kd, student, teacher)
    add("kdtf KD / KD with the teacher's BatchNorm not folded (images/s)", lambda a, b: a / b,
        kd, get(UNFOLDED))
    add("DIST / KD step time", lambda k, d: k / d, kd, get("kdtf DIST"))
    add("EC / KD step time", lambda k, e: k / e, kd, get("kdtf EC"))
    add("cached KD / keras.distillation KD (images/s)", lambda c, k: c / k,
        get("kdtf cached KD"), keras_kd)
    add("cached KD / kdtf KD (images/s)", lambda c, k: c / k, get("kdtf cached KD"), kd)
    for kind in pair.cfg.inputs:
        add(f"KD augmented in step / kdtf KD, {kind} (images/s)", lambda a, b: a / b,
            get(IN_STEP, kind), get("kdtf KD", kind))
    for kind in pair.cfg.inputs[1:]:
        add(f"kdtf KD {kind} / {first} (images/s)", lambda a, b: a / b, get("kdtf KD", kind), kd)
        add(f"student only {kind} / {first} (images/s)", lambda a, b: a / b,
            get("student only", kind), student)
        add(f"cached KD {kind} / {first} (images/s)", lambda a, b: a / b,
            get("kdtf cached KD", kind), get("kdtf cached KD"))
        add(f"{kind} pipeline alone / student only {kind} (headroom)", lambda a, b: a / b,
            get("tf.data pipeline alone", kind), get("student only", kind))
    return out


# ----------------------------------------------------------------- methods
METHODS_REFERENCE = "kdtf KD"
LOGIT_STANDARDIZATION = "kd + logit_standardization"
# Methods whose Distiller other modes time too, under these names.
_METHOD_CONFIGURATIONS = {"kd": METHODS_REFERENCE, "dist": "kdtf DIST", "extracurricular": "kdtf EC"}
# The pooled penultimate layer of kdtf zoo models (RKD's, PKT's, CRD's and ReviewKD's).
_PENULTIMATE = "features"


def method_entries():
    """Rows of the methods table: `(row, registry method, RunConfig overrides, configuration)`.

    Every `kdtf.methods` entry whose trainer is "distiller", in registry
    order, and KD with logit standardization after KD.
    """
    from kdtf import methods as methods_lib

    out = []
    for m in methods_lib.REGISTRY.values():
        if m.trainer != "distiller":
            continue
        label = m.label.removeprefix("student, ") or m.name
        out.append((m.name, m.name, {}, _METHOD_CONFIGURATIONS.get(m.name, f"kdtf {label}")))
        if m.name == "kd":
            out.append((LOGIT_STANDARDIZATION, "kd", {"logit_standardization": True},
                        "kdtf KD, logit standardization"))
    return out


def aligned_stages(method, teacher, student):
    """A `stages` setting pairing the student's K stages with the teacher's deepest K.

    None when either model has no stage endpoints or both have as many.
    For reviewkd the pooled `features` pair is added, as its default does.
    """
    from kdtf import models as models_lib

    try:
        t_names, s_names = models_lib.stage_endpoints(teacher), models_lib.stage_endpoints(student)
    except (TypeError, ValueError):
        return None
    if len(t_names) == len(s_names):
        return None
    k = min(len(t_names), len(s_names))
    pairs = list(zip(t_names[-k:], s_names[-k:]))
    if method == "reviewkd" and all(_PENULTIMATE in [layer.name for layer in model.layers]
                                    for model in (teacher, student)):
        pairs.append((_PENULTIMATE, _PENULTIMATE))
    return ",".join(f"{a}:{b}" for a, b in pairs)


def one_line(error, limit=200):
    """An exception's message on one line, cut after a clause (at "; ") beyond `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) <= limit:
        return text
    cut = text.rfind("; ", 0, limit)
    return text[: cut if cut > 0 else limit - 3] + "..."


def methods_table(entries, reference_ips, ips, batch_size):
    """Each method's step time and its step time relative to KD, from per-round figures.

    Args:
        entries: dicts with "method", "configuration", "note" and
            "not_applicable" (a reason, or "" for a timed method).
        reference_ips: KD's images/s, one per round.
        ips: `{configuration: images/s per round}`, measured in the same
            rounds as `reference_ips`.
        batch_size: real examples per step.

    Returns:
        One dict per entry, adding "step_ms" (from the median images/s),
        "x_kd" (the median over rounds of method step time / KD step time)
        and "x_kd_rounds"; the three are None for a method not applicable
        (or not measured).
    """
    rows = []
    for entry in entries:
        row = {**entry, "step_ms": None, "x_kd": None, "x_kd_rounds": []}
        values = ips.get(entry["configuration"]) if not entry["not_applicable"] else None
        if values:
            row["step_ms"] = 1000 * batch_size / _median(values)
            row["x_kd_rounds"] = [k / m for k, m in zip(reference_ips, values)]
            row["x_kd"] = _median(row["x_kd_rounds"]) if row["x_kd_rounds"] else None
        rows.append(row)
    return rows


def methods_markdown(rows):
    """The methods table in markdown."""
    lines = ["| method | configuration | ms/step | x KD (step time, median of per-round ratios) "
             "| x KD per round | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["not_applicable"]:
            lines.append(f"| {r['method']} | - | - | - | - | not applicable: {r['not_applicable']} |")
            continue
        x_kd = "-" if r["x_kd"] is None else f"{r['x_kd']:.2f}"
        lines.append(f"| {r['method']} | {r['configuration']} | {_fmt(r['step_ms'], 1)} | {x_kd} | "
                     + ", ".join(f"{v:.2f}" for v in r["x_kd_rounds"]) + f" | {r['note']} |")
    return lines


def methods_text(rows):
    """The methods table for the terminal."""
    lines = [f"  {'method (step time x KD)':<40}{'ms/step':>9}{'x KD':>7}"]
    for r in rows:
        if r["not_applicable"]:
            lines.append(f"  {r['method']:<40}not applicable: {r['not_applicable']}")
        else:
            x_kd = "-" if r["x_kd"] is None else f"{r['x_kd']:.2f}"
            lines.append(f"  {r['method']:<40}{_fmt(r['step_ms'], 1):>9}{x_kd:>7}")
    return lines


# ------------------------------------------------------------------ running
def run(cfg, log=None, progress=None):
    """Runs the benchmark; returns a JSON-able dict of settings and results.

    Args:
        cfg: a `BenchConfig`.
        log: called with each progress line (default: print to stderr).
        progress: called with the result so far (`complete` False) after
            every round, e.g. to write the report as the run goes.

    Returns:
        The result dict; `complete` is False and `stopped` says why when
        `cfg.time_budget_s` cut rounds or pairs.
    """
    import keras

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    cfg.validate()
    backend = _check_backend(cfg)
    modes = tuple(dict.fromkeys(("kd",) + tuple(cfg.modes)))
    cfg = dataclasses.replace(cfg, modes=modes, pairs=tuple(cfg.pairs), inputs=tuple(cfg.inputs))
    warnings.filterwarnings("ignore", message=".*shuffle.*")
    if backend == "tensorflow":  # every configuration traces its own functions, by design
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message=".*does not have any trainable weights.*")
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(cfg.precision)
    memory = PeakMemory()
    start = time.time()
    result = {"settings": dataclasses.asdict(cfg), "backend": backend, "machine": machine(),
              "accelerator": accelerator(), "versions": _versions(), "memory": memory.describe(),
              "pairs": {}, "complete": False, "stopped": ""}
    budget = cfg.time_budget_s
    stopped = []

    def stop(message):
        stopped.append(message)
        result["stopped"] = "; ".join(stopped)
        log(message)

    try:
        for name in cfg.pairs:
            if budget and result["pairs"] and time.time() - start > budget:
                stop(f"pair {name!r} not run: the {budget:g} s time budget was spent")
                continue
            pair = _Pair(cfg, name, log)
            log(f"[{name}] {pair.settings['teacher']} -> {pair.settings['student']}: "
                f"{len(pair.contenders)} configurations, warming up")
            pair.warm_up()
            round_seconds = 0.0
            for r in range(cfg.rounds):
                if budget and r and time.time() - start + round_seconds > budget:
                    stop(f"[{name}] {r} of {cfg.rounds} rounds: another ({round_seconds:.0f} s) "
                         f"would end past the {budget:g} s time budget")
                    break
                round_start = time.perf_counter()
                for contender in pair.contenders:
                    ips = contender.measure(cfg.steps, cfg.batch_size, cfg.steps_per_execution,
                                            memory)
                    log(f"[{name}] round {r + 1}/{cfg.rounds} {contender.label}: {ips:,.0f} images/s")
                round_seconds = time.perf_counter() - round_start
                result["pairs"][name] = _pair_result(pair)
                if progress is not None:
                    result["seconds"] = time.time() - start
                    progress(result)
            result["pairs"][name] = _pair_result(pair)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    result["seconds"] = time.time() - start
    result["complete"] = not stopped
    return result


def _pair_result(pair):
    rows = []
    for c in pair.contenders:
        ips = _median(c.ips)
        rows.append({
            "name": c.name, "input": c.input, "note": c.note,
            "images_per_s": ips, "step_ms": 1000 * pair.cfg.batch_size / ips,
            "images_per_s_rounds": c.ips,
            "peak_rss_mib": max(c.peak_rss_mib) if c.peak_rss_mib else None,
            "rss_growth_mib": max(c.rss_growth_mib) if c.rss_growth_mib else None,
            "device_peak_mib": max(c.device_peak_mib) if c.device_peak_mib else None,
        })
    out = {
        **pair.settings, "teacher_params": pair.teacher_params,
        "student_params": pair.student_params, "num_examples": pair.num_examples,
        "augment": pair.augmented, "tf_data": pair.has_tf, "rows": rows,
        "rounds_done": min((len(c.ips) for c in pair.contenders), default=0),
        "jit_compile_resolved": sorted({str(c.model.jit_compile) for c in pair.contenders
                                        if c.model is not None}),
        "ratios": [{"name": n, "median": m, "rounds": r} for n, m, r in ratios(pair)],
    }
    if pair.methods:
        first = pair.cfg.inputs[0]
        reference = _find(pair.contenders, METHODS_REFERENCE, first)
        out["methods"] = methods_table(
            pair.methods, reference.ips if reference else [],
            {c.name: c.ips for c in pair.contenders if c.input == first}, pair.cfg.batch_size)
    if pair.cache is not None:
        out["cache"] = {"views": pair.cache.views, "memory_bytes": pair.cache.memory_bytes,
                        "build_seconds": pair.cache_seconds, "dtype": pair.cache.dtype}
    return out


def _versions():
    import keras

    versions = {"keras": keras.__version__, "python": platform.python_version()}
    try:
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    except ImportError:  # pragma: no cover
        pass
    if keras.backend.backend() == "jax":
        import jax

        versions["jax"] = jax.__version__
    return versions


# ------------------------------------------------------------------ output
def command_line(argv=None):
    """The exact command, with KERAS_BACKEND when it is set."""
    argv = list(sys.argv if argv is None else argv)
    prefix = f"KERAS_BACKEND={os.environ['KERAS_BACKEND']} " if os.environ.get("KERAS_BACKEND") else ""
    return prefix + "python " + " ".join(shlex.quote(a) for a in argv)


def _fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def to_text(result):
    """A plain-text summary for the terminal."""
    lines = []
    for name, p in result["pairs"].items():
        lines.append(f"{name}: {p['teacher']} ({p['teacher_params']:,} params) -> {p['student']} "
                     f"({p['student_params']:,} params), batch {result['settings']['batch_size']}, "
                     f"{result['settings']['precision']}, input {p['input_dtype']}")
        lines.append(f"  {'configuration':<40}{'images/s':>10}{'step ms':>9}{'peak RSS MiB':>14}"
                     f"{'(+ in call)':>12}")
        for row in p["rows"]:
            label = f"{row['name']} [{row['input']}]"
            lines.append(f"  {label:<40}{_fmt(row['images_per_s']):>10}{_fmt(row['step_ms'], 1):>9}"
                         f"{_fmt(row['peak_rss_mib']):>14}{_fmt(row['rss_growth_mib'], 1):>12}")
        for ratio in p["ratios"]:
            lines.append(f"  {ratio['name']:<64}{ratio['median']:>7.2f}")
        if p.get("methods"):
            lines += methods_text(p["methods"])
        if "cache" in p:
            c = p["cache"]
            lines.append(f"  teacher cache: {c['views']} view(s), {c['memory_bytes'] / 2**20:.2f} MiB "
                         f"({c['dtype']}), built in {c['build_seconds']:.1f} s")
    if not result.get("complete", True):
        lines.append(f"incomplete: {result.get('stopped') or 'cut short'}")
    lines.append("keras.distillation KD used LogitsDistillation(temperature=4, "
                 "loss=keras.losses.KLDivergence()) (softmax probabilities, tau^2 scaling).")
    return "\n".join(lines)


def to_markdown(result, command):
    """The BENCHMARKS.md report."""
    s, m = result["settings"], result["machine"]
    v = result["versions"]
    lines = [
        "# Benchmarks: distillation throughput", "",
        f"Produced by `{command}` in {result['seconds'] / 60:.1f} min.", "",
        "| setting | value |", "|---|---|",
        f"| machine | {m['cpu']}, {m['cores']} cores; accelerator: {result['accelerator']} |",
        f"| backend | {result['backend']} (Keras {v['keras']}"
        + (f", TensorFlow {v['tensorflow']}" if "tensorflow" in v else "")
        + (f", JAX {v['jax']}" if "jax" in v else "") + f", Python {v['python']}) |",
        f"| batch size | {s['batch_size']} real examples per step |",
        f"| precision | {s['precision']} |",
        f"| jit_compile / steps_per_execution | {s['jit_compile']} / {s['steps_per_execution']} "
        "(the same for every configuration) |",
        f"| timing | median of {s['rounds']} rounds; each round times every configuration once "
        f"(A B C ... A B C ...); {s['steps']} steps per measurement, first execution untimed; "
        "compilation in an untimed warm-up |",
        f"| peak memory | {result['memory']} |",
        "| keras.distillation loss | `LogitsDistillation(temperature=4, loss=keras.losses.KLDivergence())`"
        " (softmax probabilities, tau^2 scaling; its default `\"kl_divergence\"` string would apply "
        "the KL function to logits) |",
        "| kdtf losses | KD(temperature=4), DIST(temperature=4); student_loss_weight 0.5; Adam; "
        "defaults otherwise (`fold_teacher_batchnorm=True`: each BatchNorm after a float32 "
        "convolution of the teacher is folded into it; none under mixed precision) |",
    ]
    if s["rounds"] < 3:
        lines += ["", f"**Fewer than 3 rounds ({s['rounds']}): a smoke run, not a reference figure.**"]
    if not result.get("complete", True):
        lines += ["", "**Incomplete: " + (result.get("stopped") or "the run was still going (or was "
                                          "cut short) when this was written") + ".**"]
    for name, p in result["pairs"].items():
        lines += [
            "", f"## {name}: {p['teacher']} -> {p['student']}", "",
            *([f"Rounds measured: {p['rounds_done']} of {s['rounds']}.", ""]
              if p.get("rounds_done", s["rounds"]) < s["rounds"] else []),
            f"Teacher {p['teacher_params']:,} parameters, student {p['student_params']:,}; data: "
            f"{p['data']}; input dtype {p['input_dtype']}"
            + (" (normalised by a Rescaling layer inside the models)" if p["input_dtype"] == "uint8" else "")
            + "; augmentation: " + _augmentation_text(p)
            + f"; jit_compile resolved by Keras to {', '.join(p['jit_compile_resolved'])}.",
            _inputs_text(p, result["backend"]), "",
            "| configuration | input | images/s (median) | step ms | images/s per round | peak RSS MiB "
            "| RSS growth in the call MiB |"
            + (" device peak MiB |" if any(r["device_peak_mib"] for r in p["rows"]) else ""),
            "|---|---|---|---|---|---|---|" + ("---|" if any(r["device_peak_mib"] for r in p["rows"]) else ""),
        ]
        for row in p["rows"]:
            name_cell = row["name"] + (f" ({row['note']})" if row["note"] else "")
            line = (f"| {name_cell} | {row['input']} | {_fmt(row['images_per_s'])} | "
                    f"{_fmt(row['step_ms'], 1)} | "
                    + ", ".join(_fmt(x) for x in row["images_per_s_rounds"])
                    + f" | {_fmt(row['peak_rss_mib'])} | {_fmt(row['rss_growth_mib'], 1)} |")
            if any(r["device_peak_mib"] for r in p["rows"]):
                line += f" {_fmt(row['device_peak_mib'])} |"
            lines.append(line)
        lines += ["", "| ratio (median of per-round ratios) | median | per round |", "|---|---|---|"]
        for ratio in p["ratios"]:
            lines.append(f"| {ratio['name']} | {ratio['median']:.2f} | "
                         + ", ".join(f"{r:.2f}" for r in ratio["rounds"]) + " |")
        if p.get("methods"):
            lines += ["", f"Distillation methods of `kdtf.methods` (`--modes=methods`), each built by "
                      "`pipeline.experiment.make_distiller` with the registry's defaults, timed in "
                      f"the same rounds as KD on `{s['inputs'][0]}` inputs; x KD is the method's "
                      "step time over KD's. sskd (stage-by-stage phases) and none (the student only "
                      "row) are not one Distiller step.", "", *methods_markdown(p["methods"])]
        if "cache" in p:
            c = p["cache"]
            lines += ["", f"Teacher cache: {c['views']} view(s) per example, "
                      f"{c['memory_bytes']:,} bytes ({c['dtype']}), built in {c['build_seconds']:.1f} s "
                      "(one teacher pass per view, not included in the figures above)."]
    lines += [
        "", "Notes: figures count real training images (EC also runs synthetic inputs through "
        "teacher and student: as many as the real batch in the extracurricular mode's Mixup "
        "row, synthetic_ratio times as many in the methods table, as its note says). The bound "
        "is one student training step plus one teacher forward pass per batch, each timed "
        "alone; both include Keras's fixed per-step cost (Python, dispatch), which one "
        "distillation step pays once, so shares above 1 are "
        "possible where that cost dominates (tiny models; a larger --steps_per_execution "
        "amortises it). Teacher weights are random (speed does not depend on them).",
    ]
    return "\n".join(lines) + "\n"


def _augmentation_text(pair):
    if not pair["augment"]:
        return "none"
    if not pair.get("tf_data", True):
        return ("inside the train step only (the \"augmented in step\" rows; no TensorFlow here, "
                "so no tf.data augmentation, and the teacher cache holds the fixed data)")
    return ("random crop + flip of the uint8 images in tf.data (and, for the "
            "\"augmented in step\" rows, inside the train step)")


def _inputs_text(pair, backend):
    ready = ("device arrays, converted once" if backend == "jax"
             else "tf.data.Dataset.from_tensors(batch).repeat()")
    text = f"Inputs: `memory` repeats one ready batch ({ready})"
    if pair.get("tf_data", True):
        return text + ("; `tfdata` is the real shuffled pipeline (kdtf.data.make_dataset, or "
                       "TeacherCache.dataset for cached KD).")
    return text + "; no TensorFlow here, so no `tfdata` rows."


def write(path, text):
    """Writes `text` to `path` atomically (`kdtf.atomic`), replacing it."""
    from kdtf.atomic import atomic_write_bytes

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, text.encode(), overwrite=True)


def write_json(path, result):
    write(path, json.dumps(result, indent=1, default=float))


def write_report(output, result, command):
    """Writes the markdown report to `output` and the raw figures to `<output>.json`."""
    write(output, to_markdown(result, command))
    write_json(os.path.splitext(output)[0] + ".json", result)


def run_and_write(cfg, output="", log=None):
    """`run(cfg)`, with the report written to `output` after every round and at the end.

    Args:
        cfg: a `BenchConfig`.
        output: the markdown report's path (`write_report`; its raw figures go
            to `<output>.json`); "" writes nothing.
        log: as for `run`.

    Returns:
        The result of `run`.
    """
    command = command_line()
    report = (lambda result: write_report(output, result, command)) if output else None
    result = run(cfg, log=log, progress=report)
    if output:
        report(result)
    return result
