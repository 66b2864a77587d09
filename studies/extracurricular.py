"""Extracurricular learning on MNIST-1D: settings chosen on validation, then seeds.

The study behind results/extracurricular.md (issue 4):

1. **Selection** (seed 0, validation accuracy only): a coordinate search over the
   sampler, the synthetic ratio, the synthetic-loss weight and the temperature,
   starting from KD's settings. Every candidate is logged: the table is the
   ablation that explains the result.
2. **Evaluation** (seeds 0, 1, 2, test accuracy): teacher, ERM, KD, DIST, the
   selected extracurricular (EC) student and the *oracle* (the same training
   with the synthetic inputs replaced by real inputs the student never saw,
   labelled only by the teacher; `kdtf.samplers.Pool`).

With 10% of the labels the oracle's pool is the other 90% of the training
inputs; with all labels it is fresh MNIST-1D inputs from the dataset's own
generator (`kdtf.data.generate_mnist1d`). Samplers are fitted to the labelled
training inputs only (the rest stay unused, as the issue asks).

    python -m studies.extracurricular --output=results/extracurricular.md
"""
import argparse
import dataclasses
import json
import sys
import time

import keras
import numpy as np

from kdtf import data as data_lib
from pipeline import experiment
from kdtf import samplers as samplers_lib

SAMPLERS = ("mixup", "noise", "gmm", "gmm_full", "oracle")
ORACLE_POOL_SIZE = 20000


def make_sampler(kind, splits, seed):
    """A synthetic-input sampler for the study, fitted where needed.

    Args:
        kind: one of `SAMPLERS`.
        splits: the student's `Splits` (its `x_train` are the labelled inputs).
        seed: sampler seed.

    Returns:
        A `kdtf.samplers.Sampler`.
    """
    if kind == "mixup":
        return samplers_lib.Mixup(alpha=1.0, seed=seed)
    if kind == "noise":
        return samplers_lib.GaussianNoise(stddev=0.3, seed=seed)
    if kind == "gmm":
        return samplers_lib.GaussianMixture(num_components=20, covariance="diag", seed=seed).fit(
            splits.x_train)
    if kind == "gmm_full":
        return samplers_lib.GaussianMixture(num_components=10, covariance="full", seed=seed).fit(
            splits.x_train)
    if kind == "oracle":
        return samplers_lib.Pool(seed=seed).fit(oracle_pool(splits))
    raise ValueError(f"sampler: unknown {kind!r}; valid: {', '.join(SAMPLERS)}.")


def oracle_pool(splits):
    """Real inputs the student has no labels for: held-back or fresh ones."""
    if splits.x_unlabeled is not None and len(splits.x_unlabeled):
        return splits.x_unlabeled
    x, _ = data_lib.generate_mnist1d(ORACLE_POOL_SIZE, seed=7)
    return x


@dataclasses.dataclass
class Variant:
    """One extracurricular configuration."""

    sampler: str = "mixup"
    synthetic_ratio: float = 1.0
    synthetic_loss_weight: float = 1.0
    temperature: float = 4.0

    def label(self):
        return (f"{self.sampler}, ratio {self.synthetic_ratio:g}, "
                f"w_syn {self.synthetic_loss_weight:g}, T {self.temperature:g}")


def train_ec(cfg, splits, teacher, variant, seed):
    """Trains an EC student with `variant`; returns val and test metrics."""
    run_cfg = dataclasses.replace(
        cfg, seed=seed, method="extracurricular", temperature=variant.temperature,
        synthetic_ratio=variant.synthetic_ratio,
        synthetic_loss_weight=variant.synthetic_loss_weight)
    sampler = make_sampler(variant.sampler, splits, seed)
    student, _ = experiment.train_student(run_cfg, splits, teacher, "extracurricular",
                                          sampler=sampler)
    return _metrics(student, splits, teacher)


def _metrics(student, splits, teacher):
    return {
        "val": experiment.evaluate(student, splits, teacher, split="val")["accuracy"],
        **experiment.evaluate(student, splits, teacher),
    }


def select(cfg, splits, teacher, log=print):
    """Coordinate search on validation accuracy (seed 0); returns (best, rows)."""
    rows = []

    def trial(variant):
        start = time.time()
        m = train_ec(cfg, splits, teacher, variant, seed=0)
        rows.append({"variant": dataclasses.asdict(variant), "label": variant.label(),
                     "val": m["val"], "seconds": time.time() - start})
        log(f"  select {variant.label()}: val {m['val']:.4f} ({time.time() - start:.0f} s)")
        return m["val"]

    best = Variant()
    best_val = -1.0
    searches = (
        ("sampler", [s for s in SAMPLERS if s != "oracle"]),
        ("synthetic_ratio", [1.0, 4.0]),
        ("synthetic_loss_weight", [1.0, 4.0]),
        ("temperature", [4.0, 1.0]),
    )
    tried = {}
    for field, values in searches:
        for value in values:
            candidate = dataclasses.replace(best, **{field: value})
            key = json.dumps(dataclasses.asdict(candidate), sort_keys=True)
            if key not in tried:
                tried[key] = trial(candidate)
            if tried[key] > best_val:
                best, best_val = candidate, tried[key]
    return best, rows


def run_setting(cfg, seeds, log=print):
    """Selection then evaluation for one label fraction; returns a dict."""
    out = {"label_fraction": cfg.label_fraction, "epochs": cfg.epochs, "per_seed": []}
    full, splits = experiment.load_data(dataclasses.replace(cfg, seed=0))
    teacher = experiment.load_or_train_teacher(dataclasses.replace(cfg, seed=0), full)
    best, out["selection"] = select(cfg, splits, teacher, log)
    out["selected"] = dataclasses.asdict(best)
    log(f"selected: {best.label()}")
    oracle = dataclasses.replace(best, sampler="oracle")
    for seed in seeds:
        run_cfg = dataclasses.replace(cfg, seed=seed)
        keras.utils.set_random_seed(seed)
        full, splits = experiment.load_data(run_cfg)
        teacher = experiment.load_or_train_teacher(run_cfg, full)
        row = {"seed": seed, "teacher": experiment.evaluate(teacher, full)["accuracy"]}
        for method in ("none", "kd", "dist"):
            student, _ = experiment.train_student(dataclasses.replace(run_cfg, method=method),
                                                  splits, teacher, method)
            row[method] = _metrics(student, splits, teacher)
        row["ec"] = train_ec(cfg, splits, teacher, best, seed)
        row["oracle"] = train_ec(cfg, splits, teacher, oracle, seed)
        log(f"seed {seed}: " + ", ".join(
            f"{k} {v['accuracy']:.4f}" for k, v in row.items() if isinstance(v, dict)))
        out["per_seed"].append(row)
    return out


def capacity_sweep(cfg, students, variant, seeds, log=print):
    """ERM, KD, extracurricular (`variant`) and its oracle for several students.

    Where the oracle (real unlabelled inputs in place of synthetic ones)
    closes no more of KD's gap than the sampler does, the ceiling is the
    student's: this sweep keeps teacher, data and settings and changes only
    the student.

    Returns:
        A list of `{"student", "params", "per_seed"}`, per_seed rows as in
        `run_setting` (without DIST).
    """
    from kdtf import models as models_lib

    out = []
    for name in students:
        student_cfg = dataclasses.replace(cfg, student=name)
        entry = {"student": name, "per_seed": []}
        for seed in seeds:
            run_cfg = dataclasses.replace(student_cfg, seed=seed)
            keras.utils.set_random_seed(seed)
            full, splits = experiment.load_data(run_cfg)
            teacher = experiment.load_or_train_teacher(run_cfg, full)
            if "params" not in entry:  # the same architecture every seed
                entry["params"] = int(models_lib.get(name, input_shape=splits.input_shape,
                                                     num_classes=splits.num_classes).count_params())
            row = {"seed": seed, "teacher": experiment.evaluate(teacher, full)["accuracy"]}
            for method in ("none", "kd"):
                student, _ = experiment.train_student(dataclasses.replace(run_cfg, method=method),
                                                      splits, teacher, method)
                row[method] = _metrics(student, splits, teacher)
            row["ec"] = train_ec(student_cfg, splits, teacher, variant, seed)
            row["oracle"] = train_ec(student_cfg, splits, teacher,
                                     dataclasses.replace(variant, sampler="oracle"), seed)
            log(f"{name} seed {seed}: " + ", ".join(
                f"{k} {v['accuracy']:.4f}" for k, v in row.items() if isinstance(v, dict)))
            entry["per_seed"].append(row)
        out.append(entry)
    return out


def capacity_markdown(sweep, cfg, variant):
    """The capacity sweep's table: accuracies and the share of KD's gap closed."""
    lines = [f"## Student capacity ({cfg.label_fraction:.0%} of the labels, {cfg.epochs} student "
             f"epochs, extracurricular and oracle at {variant.label()})", "",
             "| student | parameters | ERM | KD | extracurricular | oracle | EC gap closed | "
             "oracle gap closed |", "|---|---|---|---|---|---|---|---|"]
    for e in sweep:
        rows = e["per_seed"]
        acc = {m: [r[m]["accuracy"] for r in rows] for m in ("none", "kd", "ec", "oracle")}
        t, kd = np.mean([r["teacher"] for r in rows]), np.mean(acc["kd"])
        lines.append(
            f"| `{e['student']}` | {e['params']:,} | {_ms(acc['none'])} | {_ms(acc['kd'])} | "
            f"{_ms(acc['ec'])} | {_ms(acc['oracle'])} | "
            f"{gap_closed(t, kd, np.mean(acc['ec'])):+.0%} | "
            f"{gap_closed(t, kd, np.mean(acc['oracle'])):+.0%} |")
    return lines + [""]


def gap_closed(teacher, kd, other):
    """(gap_KD - gap_other) / gap_KD, gap = teacher - student accuracy."""
    gap_kd = teacher - kd
    return (gap_kd - (teacher - other)) / gap_kd if gap_kd > 0 else float("nan")


def _ms(values):
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def to_markdown(results, command, seconds):
    lines = ["# Extracurricular learning on MNIST-1D (CNN teacher -> MLP student)", ""]
    for res in results:
        pct = res["label_fraction"]
        rows = res["per_seed"]
        teacher = [r["teacher"] for r in rows]
        acc = {m: [r[m]["accuracy"] for r in rows] for m in ("none", "kd", "dist", "ec", "oracle")}
        lines += [f"## {'all labels' if pct == 1 else f'{pct:.0%} of the labels'}"
                  f" ({res.get('epochs', '?')} student epochs)", "",
                  f"Selected on validation (seed 0): **{Variant(**res['selected']).label()}**; "
                  "the oracle uses the same settings with real unlabelled inputs.", "",
                  "| model | test accuracy (mean ± std) | agreement | KL to teacher | KD gap closed |",
                  "|---|---|---|---|---|",
                  f"| teacher | {_ms(teacher)} | | | |"]
        names = {"none": "ERM", "kd": "KD", "dist": "DIST", "ec": "extracurricular",
                 "oracle": "oracle (real unlabelled inputs)"}
        t_mean, kd_mean = np.mean(teacher), np.mean(acc["kd"])
        for m, name in names.items():
            agree = np.mean([r[m]["agreement"] for r in rows])
            kl = np.mean([r[m]["kl_to_teacher"] for r in rows])
            closed = gap_closed(t_mean, kd_mean, np.mean(acc[m])) if m != "kd" else 0.0
            lines.append(f"| {name} | {_ms(acc[m])} | {agree:.3f} | {kl:.3f} | {closed:+.0%} |")
        lines += ["", "Per-seed KD gap closed by extracurricular: " + ", ".join(
            f"{gap_closed(r['teacher'], r['kd']['accuracy'], r['ec']['accuracy']):+.0%}" for r in rows),
            "", "Selection (seed 0, validation accuracy, coordinate search from KD's settings):", "",
            "| candidate | val accuracy |", "|---|---|"]
        lines += [f"| {r['label']} | {r['val']:.4f} |" for r in res["selection"]]
        lines.append("")
    lines += [f"Produced by `{command}` in {seconds / 60:.0f} min on a 2-core CPU.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label_fractions", default="1.0,0.1",
                        help="Comma-separated label fractions (default: 1.0,0.1).")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds.")
    parser.add_argument("--epochs", type=int, default=60, help="Student epochs.")
    parser.add_argument("--low_label_factor", type=int, default=5,
                        help="Epoch multiplier below all labels (10%% labels = 10x fewer steps "
                             "per epoch; default 5).")
    parser.add_argument("--workdir", default="runs", help="Teachers, logs, checkpoints.")
    parser.add_argument("--output", default="", help="Markdown file (a .json is written beside).")
    parser.add_argument("--capacity_students", default="",
                        help="Comma-separated kdtf.models students: instead of selection, train "
                             "ERM, KD, extracurricular at --variant and its oracle for each, at "
                             "the first of --label_fractions.")
    parser.add_argument("--variant", default="gmm_full,4,4,4",
                        help="With --capacity_students: sampler,ratio,weight,temperature "
                             "(default: the 10%%-label selection of "
                             "results/extracurricular_10pct.md).")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.time()
    if args.capacity_students:
        return _capacity_main(args, seeds, start)
    results = []
    for frac in [float(f) for f in args.label_fractions.split(",")]:
        epochs = args.epochs * (args.low_label_factor if frac < 1 else 1)
        cfg = experiment.RunConfig(label_fraction=frac, epochs=epochs, workdir=args.workdir,
                                   verbose=0, compare_erm=False)
        results.append(run_setting(cfg, seeds, log=lambda m: print(m, flush=True)))
        if args.output:
            _write(args, results, start)
    if args.output:
        _write(args, results, start)
    return results


def _capacity_main(args, seeds, start):
    parts = args.variant.split(",")
    if len(parts) != 4 or parts[0] not in SAMPLERS:
        raise SystemExit(f"--variant: sampler,ratio,weight,temperature with a sampler of "
                         f"{', '.join(SAMPLERS)}; got {args.variant!r}")
    variant = Variant(parts[0], *(float(v) for v in parts[1:]))
    frac = float(args.label_fractions.split(",")[0])
    epochs = args.epochs * (args.low_label_factor if frac < 1 else 1)
    cfg = experiment.RunConfig(label_fraction=frac, epochs=epochs, workdir=args.workdir,
                               verbose=0, compare_erm=False)
    sweep = capacity_sweep(cfg, args.capacity_students.split(","), variant, seeds,
                           log=lambda m: print(m, flush=True))
    if args.output:
        command = "python -m studies.extracurricular " + " ".join(sys.argv[1:])
        lines = ["# Extracurricular learning on MNIST-1D: where the ceiling comes from", "",
                 "Teacher `mnist1d_cnn` (one per seed, as in the main study); only the student "
                 "changes. KD gap closed = (acc - KD) / (teacher - KD), from seed means.", ""]
        lines += capacity_markdown(sweep, cfg, variant)
        lines += [f"Produced by `{command}` in {(time.time() - start) / 60:.0f} min on a 2-core "
                  "CPU.", ""]
        _write_report(args.output, "\n".join(lines), sweep)
    return sweep


def _write(args, results, start):
    command = "python -m studies.extracurricular " + " ".join(sys.argv[1:])
    _write_report(args.output, to_markdown(results, command, time.time() - start), results)


def _write_report(path, markdown, data):
    # studies.methods imports this module, so its writer is imported here.
    from studies import methods as methods_study

    methods_study.write_report(path, markdown, data)


if __name__ == "__main__":
    main()
