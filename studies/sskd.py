"""SSKD versus FitNets, KD and ERM on MNIST-1D and MNIST (`results/sskd.md`).

Run with:

    python -m studies.sskd --out results/sskd.md

For each dataset a teacher is trained once (seed 0); then for every seed a
fresh student is trained with each method and evaluated on the test split:

* ERM: cross-entropy on labels only.
* KD: `kdtf.Distiller` with `KD(tau=4)`, `student_loss_weight=0.5`.
* FitNets (w): `kdtf.Distiller` with `FeatureMSE` on the middle stage,
  `distillation_loss_weights=[w]`, `student_loss_weight=0.5`; the objective
  is `0.5 * (CE + w * feature_mse)`.
* SSKD: `kdtf.stagewise.run_sskd` (no weight to tune).
* With 10% of the labels: ERM, and SSKD whose backbone phases see all
  training inputs (only the head sees labels).
* Controls "SSKD head only": the SSKD head phase on the untrained student
  backbone (`run_sskd` with `epochs_per_stage=0`), with all and with 10% of
  the labels. SSKD's head phase starts from a closed-form ridge fit of the
  final Dense layer (`StagewiseDistiller(head_init="auto")`), which the
  end-to-end methods do not get; these rows separate what the backbone
  phases (the distillation) add from what that head fit adds.
"""
import argparse
import dataclasses
import os
import sys
import time

import keras
import numpy as np

from kdtf import data as data_lib
from kdtf import metrics as metrics_lib
from kdtf import models as models_lib
from kdtf import stagewise
from kdtf.distiller import Distiller
from kdtf.losses.feature import FeatureMSE
from kdtf.losses.kd import KD

FITNETS_WEIGHTS = (0.1, 1.0, 10.0)


@dataclasses.dataclass
class StudySetting:
    """One dataset of the study.

    Attributes:
        dataset: `kdtf.data.load` name.
        teacher: teacher model name.
        student: student model name.
        teacher_epochs: epochs of teacher training.
        epochs: epochs of the end-to-end students (ERM, KD, FitNets).
        sskd_epochs_per_stage: epochs of each SSKD backbone phase.
        sskd_head_epochs: epochs of the SSKD head phase.
        low_label_factor: epoch multiplier for the labelled parts of the 10%
            label runs (they have 10x fewer steps per epoch).
        batch_size: batch size of the students (the teacher uses 128).
    """

    dataset: str
    teacher: str
    student: str
    teacher_epochs: int
    epochs: int
    sskd_epochs_per_stage: int
    sskd_head_epochs: int
    low_label_factor: int = 5
    batch_size: int = 256


SETTINGS = {
    "mnist1d": StudySetting("mnist1d", "mnist1d_cnn", "mnist1d_cnn_small", 30, 30, 8, 6),
    "mnist": StudySetting("mnist", "mnist_cnn", "mnist_cnn_small", 3, 4, 1, 2),
}

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _adam(lr, steps):
    from kdtf.optimizers import cosine_adam

    return cosine_adam(lr, steps)


def _steps(n, batch_size):
    return -(-n // batch_size)


def _build(name, splits, seed):
    keras.utils.set_random_seed(seed)
    return models_lib.get(name, input_shape=splits.input_shape, num_classes=splits.num_classes)


def train_teacher(setting, splits, batch_size=128, lr=3e-3, verbose=0):
    """Trains the teacher of `setting` (seed 0); returns the model."""
    teacher = _build(setting.teacher, splits, 0)
    teacher.compile(
        _adam(lr, setting.teacher_epochs * _steps(len(splits.x_train), batch_size)),
        CE, metrics=["accuracy"],
    )
    teacher.fit(splits.x_train, splits.y_train, batch_size=batch_size,
                epochs=setting.teacher_epochs, verbose=verbose)
    return teacher


def fitnets_distiller(teacher, student, weight, stage=None, student_loss_weight=0.5, seed=None):
    """A `kdtf.Distiller` for FitNets: task loss + `weight` * FeatureMSE.

    Args:
        teacher: trained teacher with stage endpoints.
        student: student with stage endpoints.
        weight: feature-loss weight `w`.
        stage: `(teacher_layer, student_layer)`; defaults to both models'
            `kdtf.stagewise.middle_stage`.
        student_loss_weight: the Distiller's task weight (0.5 gives
            `0.5 * (CE + w * feature_mse)`).
        seed: Distiller seed.

    Returns:
        An uncompiled `kdtf.Distiller`.
    """
    if stage is None:
        stage = (stagewise.middle_stage(teacher), stagewise.middle_stage(student))
    loss = FeatureMSE(stage[0], stage[1])
    return Distiller(
        teacher, student, distillation_losses=[loss],
        distillation_loss_weights=[float(weight)],
        student_loss_weight=student_loss_weight, seed=seed,
    )


def _train_end_to_end(model, x, y, epochs, batch_size, lr, verbose):
    model.compile(_adam(lr, epochs * _steps(len(x), batch_size)), CE, metrics=["accuracy"])
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose)


def _logits(model, x, batch_size=1000):
    """Inference-mode logits, eagerly (no tracing for one pass over x)."""
    return np.concatenate([
        keras.ops.convert_to_numpy(model(x[i:i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ])


def run_method(method, setting, splits, teacher, seed, batch_size=128, lr=3e-3, verbose=0):
    """Trains one student with `method`; returns its test metrics.

    Args:
        method: "erm", "kd", "fitnets_<w>", "sskd", "sskd_head_only",
            "erm_10pct", "sskd_10pct" or "sskd_head_only_10pct"
            ("head_only": the SSKD head phase on the untrained backbone).
        setting: a `StudySetting`.
        splits: the dataset `Splits`.
        teacher: the trained teacher.
        seed: seed of the student's initialisation, data order and labels.
        batch_size: batch size.
        lr: peak learning rate.
        verbose: Keras verbosity.

    Returns:
        A dict with `accuracy` and `agreement` (with the teacher) on the
        test split, and `seconds`.
    """
    start = time.time()
    student = _build(setting.student, splits, 1000 + seed)
    x, y = splits.x_train, splits.y_train
    epochs = setting.epochs
    if method.endswith("_10pct"):
        low = splits.label_budget(0.1, seed=seed)
        if method == "erm_10pct":
            _train_end_to_end(student, low.x_train, low.y_train,
                              epochs * setting.low_label_factor, batch_size, lr, verbose)
        elif method in ("sskd_10pct", "sskd_head_only_10pct"):
            stagewise.run_sskd(
                teacher, student, low.x_train, low.y_train, x_unlabeled=low.x_unlabeled,
                epochs_per_stage=0 if method == "sskd_head_only_10pct" else setting.sskd_epochs_per_stage,
                head_epochs=setting.sskd_head_epochs * setting.low_label_factor,
                batch_size=batch_size, learning_rate=lr, verbose=verbose,
            )
        else:
            raise ValueError(f"method: unknown {method!r}.")
    elif method == "erm":
        _train_end_to_end(student, x, y, epochs, batch_size, lr, verbose)
    elif method == "kd":
        d = Distiller(teacher, student, KD(temperature=4.0), student_loss_weight=0.5, seed=seed)
        _train_end_to_end(d, x, y, epochs, batch_size, lr, verbose)
    elif method.startswith("fitnets_"):
        d = fitnets_distiller(teacher, student, float(method.split("_", 1)[1]), seed=seed)
        _train_end_to_end(d, x, y, epochs, batch_size, lr, verbose)
    elif method in ("sskd", "sskd_head_only"):
        stagewise.run_sskd(
            teacher, student, x, y,
            epochs_per_stage=0 if method == "sskd_head_only" else setting.sskd_epochs_per_stage,
            head_epochs=setting.sskd_head_epochs,
            batch_size=batch_size, learning_rate=lr, verbose=verbose,
        )
    else:
        raise ValueError(
            f"method: unknown {method!r}; valid: erm, kd, fitnets_<w>, sskd, "
            "sskd_head_only, erm_10pct, sskd_10pct, sskd_head_only_10pct."
        )
    s_logits = _logits(student, splits.x_test)
    t_logits = _logits(teacher, splits.x_test)
    return {
        "accuracy": metrics_lib.accuracy(splits.y_test, s_logits),
        "agreement": metrics_lib.agreement(t_logits, s_logits),
        "seconds": time.time() - start,
    }


def methods():
    """The methods of the study, in table order."""
    return (["erm", "kd"] + [f"fitnets_{w:g}" for w in FITNETS_WEIGHTS]
            + ["sskd", "sskd_head_only", "erm_10pct", "sskd_10pct", "sskd_head_only_10pct"])


def run_study(datasets=("mnist1d", "mnist"), seeds=(0, 1, 2), log=print):
    """Runs every method on every dataset and seed.

    Returns:
        `{dataset: {"teacher": acc, "setting": StudySetting,
        "runs": {method: [metrics per seed]}}}`.
    """
    results = {}
    for name in datasets:
        setting = SETTINGS[name]
        splits = data_lib.load(name, seed=0)
        t0 = time.time()
        teacher = train_teacher(setting, splits)
        t_acc = metrics_lib.accuracy(splits.y_test, _logits(teacher, splits.x_test))
        log(f"[{name}] teacher {setting.teacher}: test acc {t_acc:.4f} ({time.time() - t0:.0f}s)")
        runs = {m: [] for m in methods()}
        for seed in seeds:
            for m in methods():
                r = run_method(m, setting, splits, teacher, seed,
                               batch_size=setting.batch_size)
                runs[m].append(r)
                log(f"[{name}] seed {seed} {m}: acc {r['accuracy']:.4f} "
                    f"agree {r['agreement']:.4f} ({r['seconds']:.0f}s)")
        results[name] = {"teacher": t_acc, "setting": setting, "runs": runs,
                         "n_train": len(splits.y_train), "n_test": len(splits.y_test)}
    return results


_LABELS = {
    "erm": "ERM", "kd": "KD (tau=4)", "sskd": "SSKD",
    "erm_10pct": "ERM, 10% labels", "sskd_10pct": "SSKD, 10% labels (all inputs for backbone)",
    "sskd_head_only": "control: SSKD head only (untrained backbone)",
    "sskd_head_only_10pct": "control: SSKD head only, 10% labels",
}


def _label(m):
    if m.startswith("fitnets_"):
        return f"FitNets w={m.split('_', 1)[1]}"
    return _LABELS[m]


def _ms(values):
    v = np.asarray(values, dtype=float)
    return f"{100 * v.mean():.2f} ± {100 * v.std(ddof=1 if len(v) > 1 else 0):.2f}"


def to_markdown(results, command, seconds, seeds):
    """The results table as markdown."""
    names = list(results)
    lines = [
        "# SSKD vs FitNets, KD and ERM (issue 5)",
        "",
        f"Command: `{command}`  ",
        f"Total wall time: {seconds / 60:.1f} min on 2 shared CPU cores; seeds {list(seeds)} "
        "(student init, data order, label subset; the teacher is trained once, seed 0).",
        "",
        "Test accuracy (%) and top-1 agreement with the teacher (%), mean ± std over seeds.",
        "",
        "| method | " + " | ".join(f"{n} acc | {n} agree" for n in names) + " |",
        "|---|" + "---|---|" * len(names),
        "| teacher | " + " | ".join(f"{100 * results[n]['teacher']:.2f} | 100" for n in names) + " |",
    ]
    for m in methods():
        cells = []
        for n in names:
            runs = results[n]["runs"][m]
            cells.append(_ms([r["accuracy"] for r in runs]))
            cells.append(_ms([r["agreement"] for r in runs]))
        lines.append(f"| {_label(m)} | " + " | ".join(cells) + " |")
    lines += ["", "Settings:", ""]
    for n in names:
        s = results[n]["setting"]
        lines.append(
            f"- {n}: teacher {s.teacher} ({s.teacher_epochs} epochs) -> student {s.student}; "
            f"{results[n]['n_train']} labelled training examples, {results[n]['n_test']} test. "
            f"ERM/KD/FitNets {s.epochs} epochs; SSKD {s.sskd_epochs_per_stage} epochs per "
            f"backbone stage + {s.sskd_head_epochs} head epochs; 10%-label runs use "
            f"{s.low_label_factor}x the epochs on their labelled parts. Adam, cosine decay from "
            f"3e-3, batch {s.batch_size} (teacher 128). FitNets hint: middle stage "
            f"(teacher {stagewise.middle_stage(models_lib.get(s.teacher))}, student "
            f"{stagewise.middle_stage(models_lib.get(s.student))}), objective 0.5 * (CE + w * MSE)."
        )
    lines += ["", "## Verdict", ""] + verdict(results)
    return "\n".join(lines) + "\n"


def verdict(results):
    """Plain-language check of the claim, one line per dataset."""
    out = []
    for n, res in results.items():
        acc = {m: np.array([r["accuracy"] for r in rs]) for m, rs in res["runs"].items()}
        fit = max((m for m in acc if m.startswith("fitnets_")), key=lambda m: acc[m].mean())
        s, f, e = acc["sskd"], acc[fit], acc["erm"]
        noise = 2 * np.sqrt(s.var(ddof=1) / len(s) + f.var(ddof=1) / len(f))
        within = abs(s.mean() - f.mean()) <= noise
        beats = s.mean() - e.mean() > 2 * np.sqrt(s.var(ddof=1) / len(s) + e.var(ddof=1) / len(e))
        line = (
            f"- {n}: SSKD {100 * s.mean():.2f} vs best FitNets ({_label(fit)}) "
            f"{100 * f.mean():.2f}: difference {100 * (s.mean() - f.mean()):+.2f} points, "
            f"{'within' if within else 'outside'} noise (2 standard errors = {100 * noise:.2f}); "
            f"vs ERM {100 * e.mean():.2f}: {'beats ERM' if beats else 'does not clearly beat ERM'}"
        )
        if "sskd_head_only" in acc:
            h = acc["sskd_head_only"]
            h_noise = 2 * np.sqrt(s.var(ddof=1) / len(s) + h.var(ddof=1) / len(h))
            line += (
                f"; vs its control without backbone phases {100 * h.mean():.2f}: the "
                f"backbone phases add {100 * (s.mean() - h.mean()):+.2f} points "
                f"(2 standard errors = {100 * h_noise:.2f})"
            )
        out.append(line + ".")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/sskd.md")
    parser.add_argument("--datasets", default="mnist1d,mnist")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    datasets = [d for d in args.datasets.split(",") if d]
    for d in datasets:
        if d not in SETTINGS:
            raise ValueError(f"--datasets: unknown {d!r}; valid: {sorted(SETTINGS)}.")
    seeds = tuple(range(args.seeds))
    start = time.time()
    results = run_study(datasets, seeds)
    seconds = time.time() - start
    command = "python -m studies.sskd " + " ".join(argv if argv is not None else sys.argv[1:])
    text = to_markdown(results, command.strip(), seconds, seeds)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
