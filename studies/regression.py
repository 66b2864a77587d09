"""Regression distillation end to end: data, models, training, evaluation.

Extracurricular learning (Pouransari et al., 2021) for regression: a teacher
with a `kdtf.heads.GaussianHead` is trained with `kdtf.losses.GaussianNLL`
so it has a predictive variance to transfer; a small student learns from few
labels plus the teacher, compared as

- `erm`: the student alone, GaussianNLL on its labels;
- `kd_means`: GaussianNLL + `MeanMSE` to the teacher's means ("KD on means");
- `kl`: GaussianNLL + Gaussian `DistributionKL` on the real inputs only;
- `extracurricular`: `kl` plus the same KL on synthetic inputs drawn by a
  `kdtf.samplers` sampler inside the train step (`Distiller(sampler=...)`);
- `oracle`: `extracurricular` with the synthetic inputs replaced by real,
  held-out training inputs that only the teacher labels (methods.md: bounds
  what any sampler can close).

Datasets (all offline):

- `"sine"` (`heteroscedastic_sine`): 1-D toy, `y = sin(3x) + eps`,
  `eps ~ N(0, sigma(x)^2)`, `sigma(x) = 0.05 + 0.1 * (x + 1)` (0.05 at
  x = -1, 0.25 at x = 1), `x ~ U[-1, 1]` with no training or test points in
  the gap `(0.1, 0.5)`.
- `"auto_mpg"` (`auto_mpg`): the UCI Auto MPG data shipped with mlxtend
  (392 cars, 7 numeric features, target miles per gallon), standardised with
  training statistics; metrics are reported in mpg.
- `"diabetes"` (`diabetes`): scikit-learn's diabetes data (442 patients, 10
  features, target a measure of disease progression), standardised the same
  way; metrics in the target's units.

Example:

>>> from studies import regression
>>> results = regression.run_experiment("sine", seeds=(0, 1, 2))
>>> print(regression.results_table(results))
"""
import dataclasses
import math
import sys
import time

import keras
import numpy as np

from kdtf import samplers as samplers_lib
from kdtf.distiller import Distiller
from kdtf.heads import GaussianHead
from kdtf.heads import check_compatible
from kdtf.heads import split_gaussian
from kdtf.losses.distribution import DistributionKL
from kdtf.losses.gaussian import GaussianNLL
from kdtf.losses.gaussian import MeanMSE
from kdtf.samplers.base import Sampler

DATASETS = ("sine", "auto_mpg", "diabetes")
METHODS = ("erm", "kd_means", "kl", "extracurricular", "oracle")
SAMPLERS = ("uniform", "noise", "mixup", "gmm")
SEEDS = (0, 1, 2, 3, 4)

_LOG_2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass
class RegressionData:
    """A regression task with a label budget for the students.

    Attributes:
        name: dataset name.
        x_train, y_train: float32 `[N, F]` and `[N, 1]`; the teacher sees all.
        x_test, y_test: float32 test inputs and targets.
        num_labelled: the students see labels of the first `num_labelled`
            training rows only; the rest are the oracle's unlabelled pool.
        y_scale: standard deviation the targets were divided by; RMSE and
            NLL are reported in the original units.
        description: one line describing the task.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_labelled: int
    y_scale: float = 1.0
    description: str = ""

    @property
    def labelled(self):
        """`(x, y)` of the rows the students have labels for."""
        return self.x_train[: self.num_labelled], self.y_train[: self.num_labelled]

    @property
    def unlabelled(self):
        """Inputs of the remaining training rows (the oracle's pool)."""
        return self.x_train[self.num_labelled:]


def sine_noise_std(x):
    """Noise std of the heteroscedastic sine: `0.05 + 0.1 * (x + 1)`."""
    return 0.05 + 0.1 * (np.asarray(x) + 1.0)


def heteroscedastic_sine(num_train=400, num_test=1000, num_labelled=40,
                         gap=(0.1, 0.5), seed=0):
    """The 1-D heteroscedastic sine toy (see the module docstring).

    Args:
        num_train: training points (all labelled for the teacher).
        num_test: test points, from the same distribution (gap excluded).
        num_labelled: how many training points the students see labels of.
        gap: interval of x with no training or test points; None for none.
        seed: NumPy seed of the draw.

    Returns:
        A `RegressionData`.

    Example:

    >>> data = heteroscedastic_sine(seed=0)
    >>> data.x_train.shape, data.y_train.shape
    ((400, 1), (400, 1))
    """
    if not 1 <= num_labelled <= num_train:
        raise ValueError(
            f"`num_labelled` must be in [1, num_train={num_train}]; got {num_labelled}."
        )
    if gap is not None and not -1.0 <= gap[0] < gap[1] <= 1.0:
        raise ValueError(f"`gap` must be (low, high) inside [-1, 1]; got {gap}.")
    rng = np.random.default_rng(seed)

    def draw(n):
        x = np.empty(0)
        while x.size < n:
            c = rng.uniform(-1.0, 1.0, size=2 * n)
            if gap is not None:
                c = c[(c <= gap[0]) | (c >= gap[1])]
            x = np.concatenate([x, c])
        x = x[:n]
        y = np.sin(3.0 * x) + sine_noise_std(x) * rng.standard_normal(n)
        return x[:, None].astype("float32"), y[:, None].astype("float32")

    x_train, y_train = draw(num_train)
    x_test, y_test = draw(num_test)
    return RegressionData(
        "sine", x_train, y_train, x_test, y_test, num_labelled, 1.0,
        "y = sin(3x) + N(0, (0.05 + 0.1(x+1))^2), x ~ U[-1,1] without "
        f"{tuple(gap) if gap else 'no gap'}",
    )


def _tabular(name, x, y, description, test_fraction, label_fraction, seed):
    """A shuffled train/test split of `(x, y)`, standardised with training statistics."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1); got {test_fraction}.")
    if not 0.0 < label_fraction <= 1.0:
        raise ValueError(f"`label_fraction` must be in (0, 1]; got {label_fraction}.")
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64").reshape(len(x), 1)
    order = np.random.default_rng(seed).permutation(len(x))
    num_test = int(round(test_fraction * len(x)))
    test, train = order[:num_test], order[num_test:]
    x_mean, x_std = x[train].mean(0), x[train].std(0) + 1e-8
    y_mean, y_std = y[train].mean(), y[train].std()
    fx = lambda a: ((a - x_mean) / x_std).astype("float32")  # noqa: E731
    fy = lambda a: ((a - y_mean) / y_std).astype("float32")  # noqa: E731
    num_labelled = max(2, int(round(label_fraction * len(train))))
    return RegressionData(
        name, fx(x[train]), fy(y[train]), fx(x[test]), fy(y[test]), num_labelled, float(y_std),
        f"{description}, {len(train)} train / {num_test} test rows")


def auto_mpg(test_fraction=0.25, label_fraction=0.25, seed=0):
    """UCI Auto MPG (mlxtend's copy): predict miles per gallon.

    7 numeric features (cylinders, displacement, horsepower, weight,
    acceleration, model year, origin); the car-name column is dropped.
    Inputs and targets are standardised with training statistics.

    Args:
        test_fraction: share of the 392 cars held out for testing.
        label_fraction: share of training cars the students see labels of.
        seed: NumPy seed of the shuffle.

    Returns:
        A `RegressionData` with `y_scale` the training std of mpg.

    Example:

    >>> data = auto_mpg(seed=0)
    >>> data.x_train.shape[1]
    7
    """
    from mlxtend.data import autompg_data

    x, y = autompg_data()
    return _tabular("auto_mpg", np.asarray(x, dtype="float64")[:, :7], y,
                    "UCI Auto MPG (mlxtend)", test_fraction, label_fraction, seed)


def diabetes(test_fraction=0.25, label_fraction=0.25, seed=0):
    """scikit-learn's diabetes data (Efron et al. 2004): disease progression after a year.

    442 patients, 10 baseline features (age, sex, body-mass index, blood
    pressure, six blood serum measurements); the target is a quantitative
    measure of progression (25 to 346). Ships with scikit-learn (offline).
    Inputs and targets are standardised with training statistics.

    Args:
        test_fraction: share of the patients held out for testing.
        label_fraction: share of training patients the students see labels of.
        seed: NumPy seed of the shuffle.

    Returns:
        A `RegressionData` with `y_scale` the training std of the target.

    Example:

    >>> data = diabetes(seed=0)
    >>> data.x_train.shape[1]
    10
    """
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    return _tabular("diabetes", x, y, "scikit-learn diabetes", test_fraction, label_fraction,
                    seed)


def load(name, seed=0):
    """Returns the `RegressionData` of a dataset name in `DATASETS`."""
    if name == "sine":
        return heteroscedastic_sine(seed=seed)
    if name == "auto_mpg":
        return auto_mpg(seed=seed)
    if name == "diabetes":
        return diabetes(seed=seed)
    raise ValueError(f"Unknown regression dataset {name!r}; valid names: {list(DATASETS)}.")


def mlp(input_dim, hidden, output_dim=1, name="mlp"):
    """An MLP with ReLU hidden layers ending in a `GaussianHead`.

    Args:
        input_dim: number of input features.
        hidden: list of hidden widths, e.g. `[128, 128]`.
        output_dim: number of regression targets.
        name: model name.

    Returns:
        A `keras.Sequential` returning `[B, 2 * output_dim]`.
    """
    layers = [keras.Input((input_dim,))]
    layers += [keras.layers.Dense(w, activation="relu") for w in hidden]
    layers.append(GaussianHead(output_dim))
    return keras.Sequential(layers, name=name)


# Per-dataset model and training settings (documented defaults).
# Auto MPG overfits the variance fast under GaussianNLL: decoupled weight
# decay (AdamW) keeps teacher and students calibrated.
SETTINGS = {
    "sine": dict(teacher=[128, 128, 128], student=[16, 16], teacher_steps=3000,
                 steps=1500, batch_size=32, learning_rate=3e-3, weight_decay=0.0,
                 sampler="uniform"),
    "auto_mpg": dict(teacher=[64, 64], student=[8], teacher_steps=1000,
                     steps=600, batch_size=32, learning_rate=3e-3, weight_decay=1.0,
                     sampler="noise"),
    # Auto MPG's settings carried over unchanged (a table of the same size and
    # kind); not tuned on diabetes.
    "diabetes": dict(teacher=[64, 64], student=[8], teacher_steps=1000,
                     steps=600, batch_size=32, learning_rate=3e-3, weight_decay=1.0,
                     sampler="noise"),
}


def make_sampler(name, data, seed=0):
    """A `kdtf.samplers` sampler for a regression dataset.

    Args:
        name: one of `SAMPLERS`: "uniform" (the batch's input box, widened by
            10%), "noise" (Gaussian noise, 0.3 x the batch std per feature),
            "mixup" (alpha = 1) or "gmm" (a 4-component Gaussian mixture
            fitted to all training inputs).
        data: the `RegressionData` (for "gmm").
        seed: sampler seed.

    Returns:
        A `kdtf.samplers.Sampler`.
    """
    if name == "uniform":
        return samplers_lib.UniformBox(margin=0.1, seed=seed)
    if name == "noise":
        return samplers_lib.GaussianNoise(stddev=0.3, seed=seed)
    if name == "mixup":
        return samplers_lib.Mixup(alpha=1.0, seed=seed)
    if name == "gmm":
        sampler = samplers_lib.GaussianMixture(num_components=4, seed=seed)
        sampler.fit(data.x_train)
        return sampler
    raise ValueError(f"Unknown sampler {name!r}; valid names: {list(SAMPLERS)}.")


def _fit(model, x, y, steps, batch_size, seed, verbose):
    """Fits for `steps` optimizer steps on shuffled, repeated batches.

    Steps run 50 per compiled execution (`steps_per_execution`) over 10
    epochs, which on small data is far cheaper than many tiny epochs.
    """
    import tensorflow as tf  # tf.data owns the input pipeline

    batch_size = min(batch_size, len(x))
    ds = (tf.data.Dataset.from_tensor_slices((x, y))
          .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
          .repeat().batch(batch_size, drop_remainder=True))
    epochs = min(10, steps)
    model.fit(ds, epochs=epochs, steps_per_epoch=max(1, steps // epochs), shuffle=False,
              verbose=verbose)


def _steps_per_execution(steps):
    return max(1, min(50, steps // 10))


def _optimizer(learning_rate, weight_decay):
    if weight_decay:
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    return keras.optimizers.Adam(learning_rate)


def fit_teacher(data, hidden, steps, batch_size=32, learning_rate=3e-3, seed=0,
                verbose=0, weight_decay=0.0):
    """Trains a `GaussianHead` MLP with GaussianNLL on all training labels.

    Args:
        data: the `RegressionData`.
        hidden: hidden widths of the MLP.
        steps: optimizer steps.
        batch_size: examples per step.
        learning_rate: Adam learning rate.
        seed: seed of initialisation and shuffling.
        verbose: Keras verbosity.
        weight_decay: decoupled weight decay (AdamW) when > 0.

    Returns:
        The trained teacher `keras.Model`.
    """
    _check_steps(steps)
    keras.utils.set_random_seed(seed)
    model = mlp(data.x_train.shape[1], hidden, data.y_train.shape[1], name="teacher")
    model.compile(optimizer=_optimizer(learning_rate, weight_decay), loss=GaussianNLL(),
                  steps_per_execution=_steps_per_execution(steps))
    _fit(model, data.x_train, data.y_train, steps, batch_size, seed, verbose)
    return model


def fit_student(method, data, teacher, hidden, steps, sampler="uniform",
                batch_size=32, learning_rate=3e-3, student_loss_weight=0.5,
                synthetic_ratio=2.0, seed=0, verbose=0, weight_decay=0.0):
    """Trains a student MLP on the labelled rows with one of `METHODS`.

    Args:
        method: one of `METHODS` (see the module docstring).
        data: the `RegressionData`; the student sees `data.labelled` only.
        teacher: the trained teacher (ignored by "erm").
        hidden: hidden widths of the student MLP.
        steps: optimizer steps (batches of labelled rows).
        sampler: a name in `SAMPLERS` or a `kdtf.samplers.Sampler`, used by
            "extracurricular".
        batch_size: real examples per step.
        learning_rate: Adam learning rate.
        student_loss_weight: weight `w` of GaussianNLL; the KL/MSE terms
            get `1 - w`.
        synthetic_ratio: synthetic (or held-out) inputs per real one.
        seed: seed of initialisation, shuffling and sampling.
        verbose: Keras verbosity.
        weight_decay: decoupled weight decay (AdamW) when > 0.

    Returns:
        The trained student `keras.Model`.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; valid methods: {list(METHODS)}.")
    _check_steps(steps)
    keras.utils.set_random_seed(seed)
    x, y = data.labelled
    student = mlp(x.shape[1], hidden, y.shape[1], name=f"student_{method}")
    optimizer = _optimizer(learning_rate, weight_decay)
    spe = _steps_per_execution(steps)
    if method == "erm":
        student.compile(optimizer=optimizer, loss=GaussianNLL(), steps_per_execution=spe)
        _fit(student, x, y, steps, batch_size, seed, verbose)
        return student
    loss = MeanMSE() if method == "kd_means" else DistributionKL("gaussian")
    chosen = None
    if method == "extracurricular":
        chosen = sampler if isinstance(sampler, Sampler) else make_sampler(sampler, data, seed)
    elif method == "oracle":
        if len(data.unlabelled) == 0:
            raise ValueError("method='oracle' needs unlabelled training rows (num_labelled < N).")
        chosen = samplers_lib.Pool(seed=seed).fit(data.unlabelled)
    check_compatible(teacher, student, [loss])
    distiller = Distiller(
        teacher, student, distillation_losses=loss,
        student_loss_weight=student_loss_weight, sampler=chosen,
        synthetic_ratio=synthetic_ratio if chosen is not None else 1.0, seed=seed,
    )
    distiller.compile(optimizer=optimizer, loss=GaussianNLL(), steps_per_execution=spe)
    _fit(distiller, x, y, steps, batch_size, seed, verbose)
    return student


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int; got {steps!r}.")


def predict_gaussian(model, x, batch_size=4096):
    """Returns NumPy `(mean, std)` of a `GaussianHead` model on inputs `x`."""
    x = np.asarray(x, "float32")
    out = np.concatenate([
        np.asarray(model(x[i:i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ])
    mean, log_var = split_gaussian(out)
    return np.asarray(mean, "float64"), np.exp(0.5 * np.asarray(log_var, dtype="float64"))


def evaluate(model, data, teacher=None):
    """Test RMSE and NLL (original units) and mean KL(teacher || model).

    Args:
        model: a `GaussianHead` model.
        data: the `RegressionData`.
        teacher: optional teacher for `kl_to_teacher`.

    Returns:
        Dict with `rmse`, `nll` (per example, summed over outputs) and, with
        a teacher, `kl_to_teacher` (scale-free, so unit independent).
    """
    mean, std = predict_gaussian(model, data.x_test)
    y = data.y_test.astype("float64")
    err = y - mean
    rmse = float(np.sqrt(np.mean(err ** 2))) * data.y_scale
    nll = 0.5 * (2 * np.log(std) + err ** 2 / std ** 2 + _LOG_2PI)
    nll = float(np.mean(np.sum(nll + np.log(data.y_scale), axis=-1)))
    result = {"rmse": rmse, "nll": nll}
    if teacher is not None:
        m_t, s_t = predict_gaussian(teacher, data.x_test)
        kl = np.log(std / s_t) + (s_t ** 2 + (m_t - mean) ** 2) / (2 * std ** 2) - 0.5
        result["kl_to_teacher"] = float(np.mean(np.sum(kl, axis=-1)))
    return result


def run_experiment(dataset="sine", seeds=(0, 1, 2), methods=METHODS, sampler=None,
                   teacher_steps=None, steps=None, verbose=0, log=print):
    """Trains teacher and students on a dataset for several seeds.

    Each seed redraws the data split (and the sine's noise), the models'
    initialisation and the sampling.

    Args:
        dataset: a name in `DATASETS`.
        seeds: seeds to repeat over.
        methods: student methods, a subset of `METHODS`.
        sampler: sampler name for "extracurricular"; defaults to the
            dataset's in `SETTINGS`.
        teacher_steps, steps: override the `SETTINGS` step counts (tests).
        verbose: Keras verbosity.
        log: callable for one progress line per model, or None.

    Returns:
        Dict with `dataset`, `sampler`, `settings`, `description` and
        `runs`: `{name: [metrics dict per seed]}` where name is "teacher" or
        a method.
    """
    if dataset not in SETTINGS:
        raise ValueError(f"Unknown regression dataset {dataset!r}; valid names: {list(DATASETS)}.")
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; valid methods: {list(METHODS)}.")
    cfg = dict(SETTINGS[dataset])
    if sampler is not None:
        cfg["sampler"] = sampler
    if teacher_steps is not None:
        cfg["teacher_steps"] = teacher_steps
    if steps is not None:
        cfg["steps"] = steps
    if cfg["sampler"] not in SAMPLERS:
        raise ValueError(f"Unknown sampler {cfg['sampler']!r}; valid names: {list(SAMPLERS)}.")
    runs = {name: [] for name in ("teacher",) + tuple(methods)}
    description = ""
    for seed in seeds:
        data = load(dataset, seed=seed)
        description = f"{data.description}; students see labels of {data.num_labelled} rows"
        start = time.time()
        teacher = fit_teacher(data, cfg["teacher"], cfg["teacher_steps"], cfg["batch_size"],
                              cfg["learning_rate"], seed, verbose,
                              cfg["weight_decay"])
        runs["teacher"].append(evaluate(teacher, data))
        _log(log, dataset, seed, "teacher", runs["teacher"][-1], start)
        for method in methods:
            start = time.time()
            student = fit_student(method, data, teacher, cfg["student"], cfg["steps"],
                                  cfg["sampler"], cfg["batch_size"], cfg["learning_rate"],
                                  seed=seed, verbose=verbose,
                                  weight_decay=cfg["weight_decay"])
            runs[method].append(evaluate(student, data, teacher))
            _log(log, dataset, seed, method, runs[method][-1], start)
    return {"dataset": dataset, "sampler": cfg["sampler"], "settings": cfg,
            "description": description, "runs": runs, "seeds": list(seeds)}


def _log(log, dataset, seed, name, metrics, start):
    if log is not None:
        values = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        log(f"[{dataset} seed={seed}] {name}: {values} ({time.time() - start:.0f}s)")


_LABELS = {
    "teacher": "teacher (GaussianNLL, all labels)",
    "erm": "student ERM (GaussianNLL)",
    "kd_means": "student KD on means (NLL + MeanMSE)",
    "kl": "student KL, real inputs only",
    "extracurricular": "student extracurricular (KL, real + {sampler})",
    "oracle": "student oracle (KL, real + held-out real inputs)",
}


def _ms(values):
    """`mean ± sample std` (std 0 for one value)."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {std:.3f}"


def results_table(*results):
    """Markdown table of one or more `run_experiment` results.

    Columns: test RMSE, test NLL and KL(teacher || student) as mean ± sample
    std over seeds; each student against ERM (`RMSE vs ERM`: the relative
    change of the seed-mean RMSE, negative = lower error; `NLL vs ERM`: the
    difference of the seed means in nats); and the share of the KD-on-means
    NLL gap to the teacher that a method closes, `(gap_KD - gap) / gap_KD`
    with `gap = NLL - NLL_teacher` ("—" when KD is not worse than the
    teacher).

    Returns:
        The table as a markdown string.
    """
    lines = [
        "| dataset | model | RMSE | NLL | KL(teacher‖student) | RMSE vs ERM | NLL vs ERM | "
        "NLL gap closed vs KD-means |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        runs = result["runs"]
        mean = lambda name, key: float(np.mean([r[key] for r in runs[name]]))  # noqa: E731
        gap_kd = (mean("kd_means", "nll") - mean("teacher", "nll")) if "kd_means" in runs else None
        for name, per_seed in runs.items():
            cells = []
            for key in ("rmse", "nll", "kl_to_teacher"):
                values = [r[key] for r in per_seed if key in r]
                cells.append(_ms(values) if values else "—")
            if "erm" in runs and name not in ("teacher", "erm"):
                rmse_erm = mean("erm", "rmse")
                cells.append(f"{100 * (mean(name, 'rmse') - rmse_erm) / rmse_erm:+.1f}%")
                cells.append(f"{mean(name, 'nll') - mean('erm', 'nll'):+.3f}")
            else:
                cells += ["—", "—"]
            closed = "—"
            if gap_kd is not None and gap_kd > 0 and name not in ("teacher", "kd_means"):
                gap = mean(name, "nll") - mean("teacher", "nll")
                closed = f"{100 * (gap_kd - gap) / gap_kd:+.0f}%"
            label = _LABELS[name].format(sampler=result["sampler"])
            lines.append(f"| {result['dataset']} | {label} | " + " | ".join(cells) + f" | {closed} |")
    return "\n".join(lines) + "\n"


def benchmark(seeds=SEEDS, datasets=DATASETS, log=print):
    """Runs every dataset with every method and returns the markdown table."""
    results = [run_experiment(name, seeds=seeds, log=log) for name in datasets]
    return results_table(*results), results


def write_results(path="results/regression.md", seeds=SEEDS, datasets=DATASETS, log=print,
                  command=None):
    """Runs `benchmark` and writes the table, settings and command to `path`
    (and the per-seed metrics to the `.json` beside it).

    Returns:
        The markdown table.
    """
    import datetime

    from studies import methods as methods_study

    start = time.time()
    table, results = benchmark(seeds=seeds, datasets=datasets, log=log)
    command = command or (f"python -m studies.regression --seeds={','.join(map(str, seeds))} "
                          f"--datasets={','.join(datasets)} --output={path}")
    lines = [
        "# Regression distillation: ERM vs KD on means vs extracurricular",
        "",
        f"Mean ± sample std over seeds {', '.join(map(str, seeds))} (each seed redraws the data "
        "split, the initialisation and the sampling). RMSE and NLL on the test split in the "
        "target's units (NLL per example, nats); KL is the mean Gaussian KL(teacher ‖ student) "
        "on test inputs. `RMSE vs ERM`: relative change of the mean RMSE against the ERM "
        "student (negative = lower error); `NLL vs ERM`: difference of the mean NLL in nats. "
        "Settings are fixed per dataset (below), not selected on a validation split.",
        "",
        table,
        "Settings:",
        "",
    ]
    for result in results:
        cfg = result["settings"]
        lines.append(f"- {result['dataset']}: {result['description']}; teacher MLP {cfg['teacher']} "
                     f"({cfg['teacher_steps']} steps, all labels), student MLP {cfg['student']} "
                     f"({cfg['steps']} steps on the labelled rows), batch {cfg['batch_size']}, "
                     f"Adam(W) lr {cfg['learning_rate']} weight decay {cfg['weight_decay']}, "
                     f"student_loss_weight 0.5, synthetic_ratio 2, sampler '{cfg['sampler']}'.")
    lines += ["", f"Produced by `{command}` on {methods_study.machine()}, "
              f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} (local), wall time "
              f"{(time.time() - start) / 60:.1f} min.", ""]
    methods_study.write_report(path, "\n".join(lines), results)
    return table


def main(argv=None):
    """`python -m studies.regression --output=results/regression.md`."""
    import argparse

    parser = argparse.ArgumentParser(description="Regression distillation study (results/regression.md).")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="Comma-separated seeds.")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"Comma-separated, of {', '.join(DATASETS)}.")
    parser.add_argument("--output", default="results/regression.md", help="Markdown file.")
    args = parser.parse_args(argv)
    try:
        seeds = tuple(int(v) for v in args.seeds.split(","))
    except ValueError:
        parser.error(f"--seeds: comma-separated integers; got {args.seeds!r}")
    datasets = tuple(args.datasets.split(","))
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        parser.error(f"--datasets: unknown {', '.join(unknown)}; valid: {', '.join(DATASETS)}")
    write_results(args.output, seeds, datasets,
                  command="python -m studies.regression " + " ".join(
                      sys.argv[1:] if argv is None else argv))


def plot_predictions(models, data, path, x_range=(-1.25, 1.25), gap=(0.1, 0.5)):
    """Saves a PNG of each 1-D model's mean +- 2 std with the training points.

    Args:
        models: dict `{title: GaussianHead model}` with 1-D inputs and
            outputs, e.g. teacher and students; one panel each.
        data: the `RegressionData` (1-D), its training points are drawn
            (the students' labelled ones highlighted).
        path: output PNG path.
        x_range: inputs to plot.
        gap: interval shaded as "no training data"; None for none.

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if data.x_train.shape[1] != 1 or data.y_train.shape[1] != 1:
        raise ValueError("plot_predictions needs 1-D inputs and targets (the sine task).")
    x = np.linspace(x_range[0], x_range[1], 400, dtype="float32")[:, None]
    cols = min(2, len(models))
    rows = int(math.ceil(len(models) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False,
                             sharex=True, sharey=True)
    x_lab, y_lab = data.labelled
    for ax, (title, model) in zip(axes.flat, models.items()):
        mean, std = predict_gaussian(model, x)
        mean, std = mean[:, 0], std[:, 0]
        if gap is not None:
            ax.axvspan(gap[0], gap[1], color="0.92", label="no training data")
        ax.scatter(data.x_train[:, 0], data.y_train[:, 0], s=5, color="0.6",
                   label="training points (teacher)")
        ax.scatter(x_lab[:, 0], y_lab[:, 0], s=14, color="black",
                   label="labelled for students")
        ax.plot(x[:, 0], np.sin(3 * x[:, 0]), "--", color="green", lw=1, label="sin(3x)")
        ax.plot(x[:, 0], mean, color="C0", lw=2, label="predicted mean")
        ax.fill_between(x[:, 0], mean - 2 * std, mean + 2 * std, color="C0", alpha=0.25,
                        label="mean ± 2 std")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-2.2, 2.2)
    for ax in axes.flat[len(models):]:
        ax.axis("off")
    axes.flat[0].legend(loc="upper left", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
