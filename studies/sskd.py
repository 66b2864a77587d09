"""SSKD against FitNets, KD and ERM at converged budgets (`results/sskd.md`).

SSKD (stage-by-stage knowledge distillation) trains the student's backbone
one stage at a time to mimic the teacher's features, then trains the task
head on the labels. This study puts it beside the end-to-end methods on the
pipeline's converged teachers and budgets (issue 17, item 6):

- teachers: the pipeline's default (`mnist1d_cnn`, 0.973 test; `mnist_cnn`
  with shifted digits, 0.980), trained once (seed 0) and cached;
- ERM, KD (its validation-selected temperature: 1 on MNIST-1D, 4 on MNIST)
  and FitNets at weights 0.1, 1 and 10 on the middle stage, each for the
  pair's epochs of `studies.defaults.PAIR_EPOCHS` (where the validation
  curves flatten), at the learning rate selected there (1e-2);
- SSKD: `--stage_epochs` per backbone stage, then as many head epochs as the
  end-to-end methods train; the table gives each stage's feature loss at a
  quarter, half, three quarters and the end of its phase (flat = the phase
  has plateaued);
- the control "SSKD without backbone phases" (`stage_epochs=0`): the head
  phase alone on the untrained backbone, to separate what the feature
  mimicking adds from SSKD's head training (its ridge initialisation
  included).

Every run goes through `pipeline.experiment.train_student` and is cached as
JSON under `<workdir>/methods_study/<pair>/` (`studies.methods.Pair`), shared
with the defaults and methods studies.

    python -m studies.sskd --output=results/sskd.md
"""
import argparse
import datetime
import sys
import time

import numpy as np

from pipeline import experiment
from studies import defaults as defaults_study
from studies import methods as methods_study

PAIRS = ("mnist1d", "mnist")
FITNETS_WEIGHTS = (0.1, 1.0, 10.0)
LEARNING_RATE = 1e-2  # selected for ERM and KD on both pairs (results/defaults.md)
KD_TEMPERATURE = {"mnist1d": 1.0, "mnist": 4.0}  # selected there too
STAGE_EPOCHS = {"mnist1d": 30, "mnist": 10}


def rows(pair_name, stage_epochs):
    """`(key, label, Candidate)` of the study's rows for one pair."""
    c = methods_study._cand
    lr = LEARNING_RATE
    out = [("erm", "ERM (labels only)", c("none", learning_rate=lr)),
           ("kd", f"KD (T {KD_TEMPERATURE[pair_name]:g})",
            c("kd", learning_rate=lr, temperature=KD_TEMPERATURE[pair_name]))]
    out += [(f"fitnets_{w:g}", f"FitNets (weight {w:g})",
             c("fitnets", learning_rate=lr, feature_weight=w)) for w in FITNETS_WEIGHTS]
    out += [("sskd", f"SSKD ({stage_epochs} epochs per stage)",
             c("sskd", learning_rate=lr, stage_epochs=stage_epochs)),
            ("sskd_control", "control: SSKD without backbone phases",
             c("sskd", learning_rate=lr, stage_epochs=0))]
    return out


def run(args, log):
    base = experiment.RunConfig(verbose=0, compare_erm=False, export="",
                                teacher_epochs=args.teacher_epochs)
    out = []
    for name in args.pairs:
        pair = methods_study.Pair(name, base, args.workdir, float("inf"), log)
        epochs = args.epochs or defaults_study.PAIR_EPOCHS[name]
        stage_epochs = args.stage_epochs or STAGE_EPOCHS[name]
        entry = {"pair": name, **methods_study.PAIRS[name], "teacher_metrics": pair.teacher_metrics,
                 "epochs": epochs, "stage_epochs": stage_epochs, "rows": []}
        for key, label, cand in rows(name, stage_epochs):
            runs = [pair.result(cand, epochs, s) for s in args.seeds]
            entry["rows"].append({
                "key": key, "label": label,
                "test": [r["test"]["accuracy"] for r in runs],
                "agreement": [r["test"]["agreement"] for r in runs],
                "seconds": float(np.mean([r["train_seconds"] for r in runs])),
                "history": runs[0].get("history", {})})
        out.append(entry)
    return out


def _quarters(curve):
    return " / ".join(f"{v:.4g}" for v in methods_study.quarters(curve)) or "-"


def verdict(entry):
    """One sentence on SSKD against the best FitNets, KD, ERM and its control."""
    by = {r["key"]: r for r in entry["rows"]}
    fit = max((r for r in entry["rows"] if r["key"].startswith("fitnets_")),
              key=lambda r: np.mean(r["test"]))
    parts = []
    for other, name in ((fit, fit["label"]), (by["kd"], by["kd"]["label"]), (by["erm"], "ERM"),
                        (by["sskd_control"], "its control without backbone phases")):
        m, sd = methods_study.paired_diff(by["sskd"]["test"], other["test"])
        se = sd / np.sqrt(len(other["test"]))
        word = "above" if m > 2 * se else "below" if m < -2 * se else "level with"
        parts.append(f"{word} {name} ({m:+.4f} ± {sd:.4f})")
    return (f"On `{entry['teacher']}` -> `{entry['student']}`, SSKD is " + ", ".join(parts[:-1])
            + f", and {parts[-1]} (paired per-seed differences, mean ± sample std; \"above\" or "
            "\"below\" when the mean is more than 2 standard errors from 0).")


def to_markdown(results, args, command, seconds):
    lines = ["# SSKD against FitNets, KD and ERM at converged budgets", "",
             "Each pair's teacher is the pipeline's (trained once, seed 0, cached); every student "
             "trains through `pipeline.experiment.train_student` at learning rate "
             f"{LEARNING_RATE:g} (selected on validation in results/defaults.md), batch 128, "
             "Adam with cosine decay. End-to-end methods train the pair's epochs (where the "
             "validation curves flatten, results/defaults.md); SSKD trains `stage_epochs` per "
             "backbone stage and then as many head epochs. Test accuracy, mean ± sample std over "
             "seeds " + ", ".join(map(str, args.seeds)) + ".", ""]
    for e in results:
        tm = e["teacher_metrics"]
        lines += [f"## `{e['teacher']}` -> `{e['student']}`, {e['epochs']} epochs "
                  f"(SSKD: {e['stage_epochs']} per stage + {e['epochs']} head)", "",
                  f"Teacher: test {tm['test']:.4f} ({tm['params']:,} parameters).", "",
                  "| method | test accuracy | per seed | agreement with the teacher | s / run |",
                  "|---|---|---|---|---|"]
        for r in e["rows"]:
            lines.append(f"| {r['label']} | {methods_study._ms(r['test'])} | "
                         f"{', '.join(f'{t:.3f}' for t in r['test'])} | "
                         f"{np.mean(r['agreement']):.3f} | {r['seconds']:.0f} |")
        sskd = next(r for r in e["rows"] if r["key"] == "sskd")
        stage_keys = sorted(k for k in sskd["history"] if k.endswith("/loss")
                            and not k.startswith("head"))
        lines += ["", "SSKD's backbone phases (seed 0): training loss (the stage's feature MSE) "
                  "after 25 / 50 / 75 / 100% of the phase's epochs:", "",
                  "| phase | feature loss |", "|---|---|"]
        lines += [f"| {k.split('/')[0]} | {_quarters(sskd['history'][k])} |" for k in stage_keys]
        head = sskd["history"].get("head/val_accuracy", [])
        lines += [f"| head (validation accuracy) | {_quarters(head)} |", "",
                  "**Verdict.** " + verdict(e), ""]
    lines += [f"Produced by `{command}` on {methods_study.machine()}, "
              f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} (local), wall time "
              f"{seconds / 60:.1f} min for what this invocation trained (cached runs are reused, "
              "not timed again).", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default=",".join(PAIRS),
                        help="Comma-separated, of " + ", ".join(PAIRS) + ".")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="Comma-separated seeds.")
    parser.add_argument("--epochs", type=int, default=None,
                        help="Epochs of the end-to-end methods and of SSKD's head (default: "
                        "studies.defaults.PAIR_EPOCHS).")
    parser.add_argument("--stage_epochs", type=int, default=None,
                        help="SSKD's epochs per backbone stage (default: STAGE_EPOCHS per pair).")
    parser.add_argument("--teacher_epochs", type=int, default=experiment.RunConfig.teacher_epochs,
                        help="Teacher epochs (the pipeline's default).")
    parser.add_argument("--workdir", default="runs", help="Teachers and the run cache.")
    parser.add_argument("--output", default="", help="Markdown file (a .json is written beside).")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.pairs = args.pairs.split(",")
    unknown = [p for p in args.pairs if p not in PAIRS]
    if unknown:
        parser.error(f"--pairs: unknown {', '.join(unknown)}; valid: {', '.join(PAIRS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: comma-separated integers; got {args.seeds!r}")
    for flag in ("epochs", "stage_epochs", "teacher_epochs"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    return args


def main(argv=None, log=None):
    args = parse_args(argv)
    log = log or (lambda m: print(m, flush=True))
    start = time.time()
    results = run(args, log)
    if args.output:
        command = "python -m studies.sskd " + " ".join(args.argv)
        methods_study.write_report(args.output,
                                   to_markdown(results, args, command, time.time() - start),
                                   results, histories=True)  # the phases' loss curves
    return results


if __name__ == "__main__":
    main()
