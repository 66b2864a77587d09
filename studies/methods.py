"""Every distillation method side by side on two CNN pairs: settings chosen on
validation, then seeds.

The study behind results/methods.md (issue 18, item 4). For each pair
(`PAIRS`: MNIST-1D `mnist1d_cnn -> mnist1d_cnn_small`, MNIST `mnist_cnn ->
mnist_cnn_small`):

1. **Teacher**: trained (or reused from `<workdir>/teachers/`) through
   `pipeline.experiment.load_or_train_teacher` with seed 0; every student of
   the pair, whatever its seed, distils this one teacher.
2. **Budget** (seed 0, validation accuracy): ERM and KD are trained for E and
   2E epochs; while doubling gains at least `--converged_gain` (0.5 point) on
   either and 4E fits `--max_epochs`, E doubles. The markdown shows the check.
3. **Selection** (seed 0, validation accuracy only): a small grid per method on
   its main knob (`grid`); the first candidate of each grid is the registry's
   default. Every candidate's score is kept (the appendix tables).
4. **Evaluation**: the selected setting of each method on seeds 0, 1, 2; test
   and validation accuracy mean ± std (sample std, ddof=1) and the training wall
   time of one run.

Every finished run is cached as one JSON file under
`<workdir>/methods_study/<pair>/` (named by a fingerprint of its settings, the
data and the teacher), and unfinished ones resume from their per-epoch backups
(`pipeline.experiment.train_student`), so an interrupted study restarts
cheaply. `--max_minutes` stops starting new runs once the study has run that
long; the markdown then lists what finished and marks the rest "not run".

    python -m studies.methods --output=results/methods.md
"""
import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time

import keras
import numpy as np

from kdtf import methods as methods_lib
from kdtf import models as models_lib
from kdtf.atomic import atomic_write_bytes
from pipeline import experiment
from studies import extracurricular as extracurricular_study

PAIRS = {
    "mnist1d": {"dataset": "mnist1d", "teacher": "mnist1d_cnn", "student": "mnist1d_cnn_small"},
    # The default job's pair (python apps/distill.py): not in the study's default --pairs.
    "mnist1d_mlp": {"dataset": "mnist1d", "teacher": "mnist1d_cnn", "student": "mnist1d_mlp"},
    "mnist": {"dataset": "mnist", "teacher": "mnist_cnn", "student": "mnist_cnn_small"},
}
# Table rows: (row key, registry method); "kd_ls" is KD with logit standardization.
ROWS = (("none", "none"), ("kd", "kd"), ("kd_ls", "kd"), ("dist", "dist"), ("dkd", "dkd"),
        ("fitnets", "fitnets"), ("at", "at"), ("rkd", "rkd"), ("pkt", "pkt"), ("crd", "crd"),
        ("reviewkd", "reviewkd"), ("extracurricular", "extracurricular"))
ROW_KEYS = tuple(k for k, _ in ROWS)
# CRD's memory bank here has one row per training example (3600); the registry's
# 16384 negatives (the paper's, for CIFAR's 50k) would draw each example ~4.5 times
# per anchor and cost ~100 s per epoch on this CPU.
CRD_NEGATIVES = 1024
# ReviewKD on MNIST pairs the two conv stages only: by default it adds the pooled
# "features", which in mnist_cnn_small is a 784-wide flatten, so ABF's middle width
# (min(512, the deepest student stage's channels)) would be 512 and one epoch would
# cost ~35 s on this CPU (7x KD); with stage1, stage2 it is 16.
REVIEWKD_STAGES = {"mnist": {"stages": "stage1,stage2"}}
# The first student budget E checked per pair (`--epochs` 0): the MLP overfits and is
# flat by 60 epochs (results/defaults.md); on the small CNN, ERM is flat from 150 epochs
# but KD still gains from 150 to 300 (seed 0: validation +0.5 point, test 0.950 -> 0.964;
# results/defaults_cnn_small_e300.md); MNIST's students are flat by 40 (ERM 40 -> 80:
# validation -0.25 point, KD +0.5).
PAIR_EPOCHS = {"mnist1d_mlp": 60, "mnist1d": 300, "mnist": 40}
# DKD's and ReviewKD's warm-ups scaled to the budget as in the papers (20 of 240 epochs).
WARMUP_SHARE = 20 / 240
GAIN_DEFAULT = 0.005


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One setting of one method: `RunConfig` overrides and, for extracurricular,
    the study's sampler (`make_sampler`)."""

    row: str
    overrides: tuple = ()  # sorted (field, value) pairs
    sampler: str = ""

    @property
    def method(self):
        """The registry method: the row's (`ROWS`), or the row itself (e.g. "sskd")."""
        return dict(ROWS).get(self.row, self.row)

    def settings(self):
        return dict(self.overrides)

    def label(self):
        parts = [f"{k}={_fmt(v)}" for k, v in self.overrides]
        if self.sampler:
            parts.insert(0, f"sampler={self.sampler}")
        return ", ".join(parts) or "defaults"


def _fmt(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cand(row, sampler="", **overrides):
    return Candidate(row, tuple(sorted(overrides.items())), sampler)


GRID_SIZES = ("small", "full", "default")
# The "small" grid (the study's default) keeps this many of a row's candidates
# (the others all of theirs: the 0.1x / 1x / 10x weights).
SMALL = {"kd": 2, "kd_ls": 2, "dkd": 2, "extracurricular": 1}
# RKD, CRD and ReviewKD (5-8x KD's time per epoch) keep only their default, and on
# MNIST (each epoch ~1.5x MNIST-1D's) the small grid also drops the 10x weights: the
# whole grid and three seeds at converged budgets did not fit the study's time.
SMALL_BY_PAIR = {"mnist1d": {"rkd": 1, "crd": 1, "reviewkd": 1},
                 "mnist": {"fitnets": 2, "at": 2, "pkt": 2, "rkd": 1, "crd": 1, "reviewkd": 1}}


def grid(pair, size="full"):
    """The selection grid of each row: `{row: [Candidate, ...]}`.

    The first candidate is the registry's default (KD's temperature 4, ...);
    `size="small"` keeps KD's temperatures 4, 1, logit standardization's
    (2, w 0.1) and (2, w 0.5), DKD's beta 8 and 2 at temperature 4 and only
    the known-best extracurricular setting, and on MNIST fewer weights
    (`SMALL_BY_PAIR`); `size="default"` keeps only the first (tests, smoke
    runs).
    """
    # The registry's defaults (a RunConfig leaves the dataset-dependent ones unset).
    d = argparse.Namespace(**experiment.REGISTRY_DEFAULTS)
    ec_sampler = "gmm_full" if pair.startswith("mnist1d") else "gmm"
    full = {
        "none": [_cand("none")],
        "kd": [_cand("kd", temperature=t) for t in (4.0, 1.0, 2.0, 8.0)],
        # The paper's base temperature 2 with its KD weight 9 (CE 1): student_loss_weight 0.1.
        "kd_ls": [_cand("kd_ls", logit_standardization=True, temperature=t, student_loss_weight=w)
                  for t, w in ((2.0, 0.1), (2.0, 0.5), (4.0, 0.5))],
        "dist": [_cand("dist", temperature=t) for t in (4.0, 1.0)],
        "dkd": [_cand("dkd", temperature=t, dkd_beta=b) for t, b in ((4.0, 8.0), (4.0, 2.0), (1.0, 8.0))],
        "fitnets": [_cand("fitnets", feature_weight=d.feature_weight * s) for s in (1, 0.1, 10)],
        "at": [_cand("at", at_weight=d.at_weight * s) for s in (1, 0.1, 10)],
        "rkd": [_cand("rkd", rkd_distance_weight=d.rkd_distance_weight * s,
                      rkd_angle_weight=d.rkd_angle_weight * s) for s in (1, 0.1, 10)],
        "pkt": [_cand("pkt", pkt_weight=d.pkt_weight * s) for s in (1, 0.1, 10)],
        "crd": [_cand("crd", crd_weight=d.crd_weight * s) for s in (1, 0.1, 10)],
        "reviewkd": [_cand("reviewkd", reviewkd_weight=d.reviewkd_weight * s, **REVIEWKD_STAGES.get(pair, {}))
                     for s in (1, 0.1, 10)],
        # results/extracurricular.md's best (GMM, ratio 4, weight 4, T 1) and Mixup at the same.
        "extracurricular": [
            _cand("extracurricular", sampler=s, synthetic_ratio=4.0, synthetic_loss_weight=4.0,
                  temperature=1.0) for s in (ec_sampler, "mixup")],
    }
    if size == "default":
        return {row: cands[:1] for row, cands in full.items()}
    if size == "small":  # what the study's time allows: see SMALL
        limit = {**SMALL, **SMALL_BY_PAIR.get(pair, {})}
        return {row: cands[:limit.get(row, len(cands))] for row, cands in full.items()}
    if size != "full":
        raise ValueError(f"grid: unknown size {size!r}; valid: {', '.join(GRID_SIZES)}.")
    return full


STUDY_SAMPLERS = ("gmm_full", "gmm", "mixup")


def make_sampler(kind, splits, seed):
    """The extracurricular sampler `kind`, fitted to the labelled training inputs.

    "gmm_full": 10 full-covariance components (results/extracurricular.md's
    best on MNIST-1D); "gmm": 20 diagonal ones (used on MNIST, whose 784-pixel
    full covariances would make the sampler's config, hashed and backed up
    every epoch, ~6M numbers); "mixup": Beta(1, 1) mixup.
    """
    if kind not in STUDY_SAMPLERS:
        raise ValueError(f"sampler: unknown {kind!r}; valid: {', '.join(STUDY_SAMPLERS)}.")
    # The same samplers as results/extracurricular.md's study (one definition).
    return extracurricular_study.make_sampler(kind, splits, seed)


class OutOfTime(Exception):
    """Raised instead of starting a run once the study's time is up."""


class Pair:
    """One teacher/student pair: its data, teacher and cached runs."""

    def __init__(self, name, base, workdir, deadline, log, spec=None):
        """`spec` (dataset, teacher, student) defaults to `PAIRS[name]`; `name`
        also names the run cache `<workdir>/methods_study/<name>/`."""
        self.name, self.log, self.deadline = name, log, deadline
        self.cfg = dataclasses.replace(base, **(spec or PAIRS[name]), workdir=workdir)
        self.full, self.splits = experiment.load_data(self.cfg)
        self.teacher_file = experiment.teacher_path(self.cfg, self.full)
        trained = not os.path.exists(self.teacher_file)
        began = time.time()
        self.teacher = experiment.load_or_train_teacher(self.cfg, self.full)
        self.teacher_seconds = time.time() - began if trained else None
        self.teacher_metrics = {
            "test": experiment.evaluate(self.teacher, self.full)["accuracy"],
            "val": experiment.evaluate(self.teacher, self.full, split="val")["accuracy"],
            "params": int(self.teacher.count_params()),
        }
        self.cache_dir = os.path.join(workdir, "methods_study", name)
        os.makedirs(self.cache_dir, exist_ok=True)

    def run_config(self, cand, epochs, seed):
        warmup = round(WARMUP_SHARE * epochs, 3)
        return dataclasses.replace(
            self.cfg, method=cand.method, epochs=epochs, seed=seed, crd_negatives=CRD_NEGATIVES,
            dkd_warmup_epochs=warmup, reviewkd_warmup_epochs=warmup, **cand.settings())

    def cache_path(self, cand, epochs, seed):
        cfg = self.run_config(cand, epochs, seed)
        fp = experiment.fingerprint(
            cfg, data=experiment.data_fingerprint(self.full),
            teacher_file=os.path.basename(self.teacher_file), study_sampler=cand.sampler)
        return os.path.join(self.cache_dir, f"{cand.row}_e{epochs}_s{seed}_{fp}.json")

    def result(self, cand, epochs, seed, train=True):
        """The cached metrics of one run, training it first if needed (and allowed)."""
        path = self.cache_path(cand, epochs, seed)
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        if not train:
            return None
        if time.time() > self.deadline:
            raise OutOfTime(f"{cand.row} ({cand.label()}), {epochs} epochs, seed {seed}")
        cfg = self.run_config(cand, epochs, seed)
        keras.utils.set_random_seed(seed)
        sampler = make_sampler(cand.sampler, self.splits, seed) if cand.sampler else None
        began = time.time()
        student, history = experiment.train_student(cfg, self.splits, self.teacher, cand.method,
                                                    sampler=sampler)
        seconds = time.time() - began
        out = {
            "row": cand.row, "method": cand.method, "label": cand.label(), "epochs": epochs,
            "seed": seed, "settings": cand.settings(), "sampler": cand.sampler,
            "val": experiment.evaluate(student, self.splits, split="val")["accuracy"],
            "test": experiment.evaluate(student, self.splits, self.teacher),
            "val_curve": [float(v) for v in history.get(
                "val_accuracy", history.get("head/val_accuracy", []))],
            # Every per-epoch metric (SSKD's: one "<phase>/<metric>" list per phase).
            "history": {k: [float(v) for v in vs] for k, vs in history.items()},
            "train_seconds": seconds,
        }
        _write(path, json.dumps(out, indent=1).encode())
        self.log(f"[{self.name}] {cand.row} ({cand.label()}) e{epochs} s{seed}: val "
                 f"{out['val']:.4f}, test {out['test']['accuracy']:.4f} ({seconds:.0f} s)")
        return out


def budget_range(name, args):
    """(first budget E, largest budget) of pair `name`: `--epochs` or the pair's
    `PAIR_EPOCHS`, and `--max_epochs` or 2E (one doubling checked)."""
    epochs = args.epochs or PAIR_EPOCHS[name]
    return epochs, args.max_epochs or 2 * epochs


def choose_budget(pair, epochs, max_epochs, gain, out):
    """Doubles E from `epochs` while doubling gains >= `gain` for ERM or KD and
    the next check (2E against 4E) stays within `max_epochs`; returns the budget E."""
    out["max_epochs"] = max_epochs
    checks = out.setdefault("budget_checks", [])
    kd = grid(pair.name, "default")["kd"][0]
    erm = grid(pair.name, "default")["none"][0]
    e = epochs
    while True:
        row = {"epochs": e, "doubled": 2 * e}
        for key, cand in (("none", erm), ("kd", kd)):
            row[key] = [pair.result(cand, e, 0)["val"], pair.result(cand, 2 * e, 0)["val"]]
        row["gain"] = max(row[k][1] - row[k][0] for k in ("none", "kd"))
        checks.append(row)
        if row["gain"] < gain:
            out["epochs"], out["converged"] = e, True
            return e
        if 4 * e > max_epochs:  # the next check's 4E would not fit: E stays, not converged
            out["epochs"], out["converged"] = e, False
            return e
        e *= 2


def describe(pair, args, out):
    """The pair's fixed facts: models, sizes, teacher."""
    out.update(name=pair.name, rows=args.rows, grid=args.grid, **PAIRS[pair.name],
               teacher_metrics=pair.teacher_metrics, teacher_seconds=pair.teacher_seconds,
               teacher_file=os.path.basename(pair.teacher_file),
               student_params=int(models_lib.get(
                   pair.cfg.student, input_shape=pair.splits.input_shape,
                   num_classes=pair.splits.num_classes).count_params()),
               sizes=[len(pair.splits.y_train), len(pair.splits.y_val), len(pair.splits.y_test)])


def _grids(pair, args):
    return {row: c for row, c in grid(pair.name, args.grid).items() if row in args.rows}


def select(pair, args, out, train=True):
    """Seed 0, validation accuracy: every candidate, then the best of each row.

    Fills `out["selection"]` (candidate results; None for one not run),
    `out["selected"]` (labels), `out["evaluation"]` (the selected setting's
    seed-0 run) and `out["not_applicable"]`. With `train=False` reads the
    cache only (after an interruption).
    """
    epochs = out["epochs"]
    for key in ("selection", "selected", "evaluation", "not_applicable"):
        out.setdefault(key, {})
    for row, cands in _grids(pair, args).items():
        if row in out["not_applicable"]:
            continue
        try:
            results = [pair.result(c, epochs, 0, train=train) for c in cands]
        except ValueError as e:  # e.g. stages the models cannot pair
            out["not_applicable"][row] = str(e).replace("|", "/").replace("\n", " ")
            pair.log(f"[{pair.name}] {row}: not applicable: {e}")
            continue
        out["selection"][row] = results
        if all(r is not None for r in results):
            best = int(np.argmax([r["val"] for r in results]))  # ties: the earlier, default first
            out["selected"][row] = cands[best].label()
            out["evaluation"][row] = [results[best]]


def evaluate_seed(pair, args, out, seed, train=True):
    """The selected setting of every row with `seed` (appended to the evaluation)."""
    epochs = out["epochs"]
    for row, cands in _grids(pair, args).items():
        label = out["selected"].get(row)
        runs = out["evaluation"].get(row)
        if label is None or runs is None or any(r["seed"] == seed for r in runs):
            continue
        cand = next(c for c in cands if c.label() == label)
        r = pair.result(cand, epochs, seed, train=train)
        if r is not None:
            runs.append(r)


def collect(pairs, args, results):
    """After an interruption: what finished, from the cache only."""
    for pair, out in zip(pairs, results):
        if "epochs" not in out:
            continue
        select(pair, args, out, train=False)
        for seed in args.seeds:
            evaluate_seed(pair, args, out, seed, train=False)


# ------------------------------------------------------------------- markdown
def _ms(values, digits=4):
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return ""
    if len(v) == 1:  # no spread to show
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def quarters(curve):
    """A per-epoch curve's values after 25, 50, 75 and 100% of its epochs ([] if empty)."""
    return [curve[max(0, int(round(len(curve) * q)) - 1)] for q in (0.25, 0.5, 0.75, 1.0)] \
        if len(curve) else []


def paired_diff(a, b):
    """Mean and sample std (0 for one pair) of the per-seed differences `a - b`."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(np.mean(d)), float(np.std(d, ddof=1)) if len(d) > 1 else 0.0


def write_report(path, markdown, data, histories=False):
    """A study's markdown at `path` and its data as JSON beside it (`.json`).

    The runs' per-epoch histories (~40 KB each) stay in the run cache unless
    `histories` (the validation curves are kept either way)."""
    _write(path, markdown.encode())
    _write(os.path.splitext(path)[0] + ".json", json.dumps(
        data if histories else _without_histories(data), indent=1, default=str).encode())


def row_name(row):
    if row == "kd_ls":
        return methods_lib.REGISTRY["kd"].label + " + logit standardization"
    return methods_lib.REGISTRY[dict(ROWS)[row]].label or row


def pair_markdown(res, seeds):
    t = res["teacher_metrics"]
    lines = [f"## {res['dataset']}: `{res['teacher']}` -> `{res['student']}`", "",
             f"{res['sizes'][0]} train / {res['sizes'][1]} val / {res['sizes'][2]} test examples; "
             f"teacher {t['params']:,} parameters (seed 0, `{res['teacher_file']}`), "
             f"student {res['student_params']:,}.", ""]
    checks = res.get("budget_checks", [])
    if checks:
        lines += ["**Budget check** (seed 0, validation accuracy; E doubles while doubling "
                  "gains at least 0.5 point on ERM or KD):", "",
                  "| epochs E | ERM @E | ERM @2E | KD @E | KD @2E | largest gain |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c['epochs']} -> {c['doubled']} | {c['none'][0]:.4f} | {c['none'][1]:.4f} | "
                  f"{c['kd'][0]:.4f} | {c['kd'][1]:.4f} | {100 * c['gain']:+.2f} pt |" for c in checks]
        if "epochs" in res:
            verdict = ("doubling gains less than 0.5 point: converged" if res.get("converged")
                       else "**not converged**: doubling still gains; the budget is capped "
                       "at --max_epochs for the study's time (see the note above)")
            lines += ["", f"Student budget: **{res['epochs']} epochs** ({verdict}).", ""]
    evaluation = res.get("evaluation", {})
    lines += [f"**Test accuracy**, seeds {', '.join(map(str, seeds))}, the setting selected on "
              "validation (seed 0); mean ± sample std over seeds; time = training wall time of "
              "one run (mean over seeds):", "",
              "| model | selected setting | test accuracy | val accuracy | test per seed | "
              "agreement | s / run |", "|---|---|---|---|---|---|---|",
              f"| teacher | | {t['test']:.4f} | {t['val']:.4f} | (one teacher, seed 0) | | "
              + (f"{res['teacher_seconds']:.0f} |" if res.get("teacher_seconds") else
                 "(reused) |")]
    for row in ROW_KEYS:
        if row not in res.get("rows", ROW_KEYS):
            continue
        runs = evaluation.get(row, [])
        note = res.get("not_applicable", {}).get(row)
        if note:
            lines.append(f"| {row_name(row)} | not applicable: {note} | | | | | |")
            continue
        if len(runs) < len(seeds):
            done = f"{len(runs)} of {len(seeds)} seeds" if runs else "not run"
            if not runs:
                lines.append(f"| {row_name(row)} | {res.get('selected', {}).get(row, '')} | "
                             f"{done} (time budget) | | | | |")
                continue
        else:
            done = ""
        test = [r["test"]["accuracy"] for r in runs]
        lines.append(
            f"| {row_name(row)} | {res['selected'].get(row, '')} | {_ms(test)}"
            f"{' (' + done + ')' if done else ''} | {_ms([r['val'] for r in runs])} | "
            + ", ".join(f"{a:.4f}" for a in test)
            + f" | {np.mean([r['test'].get('agreement', np.nan) for r in runs]):.3f} | "
            f"{np.mean([r['train_seconds'] for r in runs]):.0f} |")
    lines.append("")
    return lines


def appendix_markdown(res):
    lines = [f"### {res['dataset']}: every candidate (seed 0, {res.get('epochs', '?')} epochs)", "",
             "| model | candidate | val accuracy | s |", "|---|---|---|---|"]
    for row, results in res.get("selection", {}).items():
        chosen = res.get("selected", {}).get(row)
        for cand, r in zip(grid(res["name"], res.get("grid", "full"))[row], results):
            mark = " (selected)" if cand.label() == chosen else ""
            if r is None:
                lines.append(f"| {row_name(row)} | {cand.label()} | not run (time budget) | |")
            else:
                lines.append(f"| {row_name(row)} | {cand.label()}{mark} | {r['val']:.4f} | "
                             f"{r['train_seconds']:.0f} |")
    lines.append("")
    return lines


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import tensorflow as tf

    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, TensorFlow "
            f"{tf.__version__}, Keras {keras.__version__}, NumPy {np.__version__}")


def compromises(results, args):
    """What the study's time limited, said in the markdown."""
    lines = []
    capped = [r for r in results if "epochs" in r and not r.get("converged")]
    if capped:
        gains = "; ".join(
            f"{r['dataset']}: ERM {100 * (c['none'][1] - c['none'][0]):+.1f} pt, KD "
            f"{100 * (c['kd'][1] - c['kd'][0]):+.1f} pt from {c['epochs']} to {c['doubled']} epochs"
            for r in results if r in capped for c in r["budget_checks"][-1:])
        lines += [f"**Compromise: the budget is not converged** ({gains}). Converged budgets "
                  "for 12 rows x 3 seeds x 2 pairs plus the selection grids did not fit the "
                  "study's time on two shared CPU cores, so the budget was capped at "
                  + ", ".join(f"{r['max_epochs']} epochs on {r['dataset']}" for r in capped)
                  + ". Differences between methods below are partly "
                  "differences in how fast they train the student, not only in where they end; "
                  "read them as results at this budget.", ""]
    if args.grid != "full":
        lines += [f"**Compromise: the '{args.grid}' selection grid** (the appendix lists every "
                  "candidate): " + ("KD temperature 4 / 1; logit standardization at base "
                  "temperature 2 with student_loss_weight 0.1 (the paper's KD weight 9) / 0.5; "
                  "DIST temperature 4 / 1; DKD beta 8 / 2 at temperature 4; FitNets, AT and "
                  "PKT weights at 1x / 0.1x / 10x of the default on MNIST-1D, at 1x / 0.1x on "
                  "MNIST (each epoch ~1.5x as long); RKD, CRD and ReviewKD (5-8x KD's time per "
                  "epoch) at their default only; "
                  "extracurricular only at results/extracurricular.md's best setting (GMM, "
                  "ratio 4, weight 4, T 1), not searched again." if args.grid == "small" else
                  "each method's default only.") + " `--grid=full` adds KD temperatures 2 and "
                  "8, logit standardization at temperature 4, DKD at temperature 1 and "
                  "extracurricular with Mixup and the weights dropped above.", ""]
    return lines


def _learning_rates(results):
    """The students' and teachers' default learning rates on each pair's dataset."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        cfg = experiment.with_defaults(experiment.RunConfig(dataset=dataset))
        out.append(f"{dataset}: students {cfg.learning_rate:g}, teacher {cfg.teacher_learning_rate:g}")
    return "; ".join(out)


def to_markdown(results, args, command, seconds, stopped=None, runs=None):
    names = {"mnist1d": "MNIST-1D", "mnist": "MNIST"}
    lines = ["# All methods side by side: " + " and ".join(dict.fromkeys(
                 names.get(r["dataset"], r["dataset"]) for r in results)) + " CNN pairs", "",
             "Teacher trained once per pair (seed 0); each student distils it. Settings selected "
             "on the validation split with seed 0 from a small grid per method (the appendix keeps "
             "every candidate), then the selected setting is trained with seeds "
             f"{', '.join(map(str, args.seeds))} and evaluated on the test split. Adam at "
             "the pipeline's default learning rates (" + _learning_rates(results) + ") with "
             "cosine decay to 0, batch "
             f"{experiment.RunConfig().batch_size}, student_loss_weight 0.5 unless the setting "
             f"says otherwise; teacher {args.teacher_epochs} epochs. Study settings that differ "
             f"from the registry's defaults: CRD with {CRD_NEGATIVES} negatives (the default 16384 "
             "is 4.5x the 3600-example memory bank); DKD's and ReviewKD's warm-ups scaled to the "
             "budget as in the papers (20 of 240 epochs = E/12); extracurricular with the study's "
             "samplers (full-covariance GMM with 10 components on MNIST-1D, diagonal GMM with 20 "
             "on MNIST, where full 784x784 covariances would be ~6M numbers in the sampler's "
             "config); ReviewKD on MNIST with --stages=stage1,stage2 (by default it adds the "
             "student's 784-wide flattened features, making its fusion width 512: ~35 s per "
             "epoch, 7x KD). No op determinism (seeded, so reruns match closely, not "
             "bit for bit).", ""]
    lines += compromises(results, args)
    if stopped:
        lines += [f"**Stopped early** ({stopped}): the rows marked 'not run' or with fewer seeds "
                  "did not finish within the study's time limit.", ""]
    for res in results:
        lines += pair_markdown(res, args.seeds)
    lines += ["## Appendix: selection", ""]
    for res in results:
        lines += appendix_markdown(res)
    lines += [f"Produced by `{command}` on {machine()}, "
              f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} (local), total wall time "
              f"{seconds / 60:.1f} min" + ("" if not runs or len(runs) < 2 else
              f", the sum over {len(runs)} invocations that shared the run cache (some may "
              "have run at the same time) (" + "; ".join(f"`{r['command']}` from {r['started']}, "
                                     f"{r['seconds'] / 60:.1f} min" for r in runs) + ")")
              + " (runs cached in the workdir are reused, not timed again). "
              "The two CPU cores were shared with other jobs, so wall times are upper bounds.", ""]
    return "\n".join(lines)


def _write(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, data, overwrite=True)


def sessions(args, start):
    """Earlier invocations of the study in this workdir (each a dict with its
    command and seconds), plus this one; the markdown's wall time is their sum."""
    path = os.path.join(args.workdir, "methods_study", "sessions.json")
    try:
        with open(path) as f:
            earlier = [s for s in json.load(f) if s.get("start") != start]
    except (OSError, ValueError):
        earlier = []
    now = {"command": "python -m studies.methods " + " ".join(args.argv), "start": start,
           "started": datetime.datetime.fromtimestamp(start).strftime("%Y-%m-%d %H:%M:%S"),
           "seconds": time.time() - start}
    everything = earlier + [now]
    _write(path, json.dumps(everything, indent=1).encode())
    return everything


def write(args, results, start, stopped=None):
    if not args.output:
        return
    command = "python -m studies.methods " + " ".join(args.argv)
    runs = sessions(args, start)
    total = sum(s["seconds"] for s in runs)
    # Every number of the markdown beside it (.json), as the other studies write theirs.
    write_report(args.output, to_markdown(results, args, command, total, stopped, runs), results)


def _without_histories(value):
    if isinstance(value, dict):
        return {k: _without_histories(v) for k, v in value.items() if k != "history"}
    if isinstance(value, list):
        return [_without_histories(v) for v in value]
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="mnist1d,mnist", help="Comma-separated: " + ", ".join(PAIRS))
    parser.add_argument("--rows", default=",".join(ROW_KEYS),
                        help="Comma-separated table rows (methods; kd_ls = KD with logit "
                             "standardization); default all.")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds (seed 0 selects).")
    parser.add_argument("--epochs", type=int, default=0,
                        help="First student budget E checked (0: each pair's PAIR_EPOCHS).")
    parser.add_argument("--max_epochs", type=int, default=0,
                        help="Longest run, at least 2E (the first check trains E and 2E): E "
                             "doubles (while not converged) only while the next check's 4E "
                             "fits; a budget capped so is reported as not shown converged "
                             "(0: 2E, one doubling checked).")
    parser.add_argument("--converged_gain", type=float, default=GAIN_DEFAULT,
                        help="Doubling E must gain less than this validation accuracy.")
    parser.add_argument("--teacher_epochs", type=int, default=60, help="Teacher epochs.")
    parser.add_argument("--grid", default="small", choices=GRID_SIZES,
                        help="Selection grid: small (default), full, or default (each method's "
                             "default only).")
    parser.add_argument("--max_minutes", type=float, default=0,
                        help="Start no run after this many minutes (0: no limit); the markdown "
                             "then shows what finished.")
    parser.add_argument("--workdir", default="runs", help="Teachers, run cache, backups.")
    parser.add_argument("--output", default="", help="Markdown file (a .json is written beside).")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.pairs = [p for p in args.pairs.split(",") if p]
    args.rows = [r for r in args.rows.split(",") if r]
    for p in args.pairs:
        if p not in PAIRS:
            parser.error(f"--pairs: unknown {p!r}; valid: {', '.join(PAIRS)}")
    for r in args.rows:
        if r not in ROW_KEYS:
            parser.error(f"--rows: unknown {r!r}; valid: {', '.join(ROW_KEYS)}")
    for p in args.pairs:
        first, _ = budget_range(p, argparse.Namespace(epochs=args.epochs, max_epochs=0))
        if args.max_epochs and args.max_epochs < 2 * first:
            parser.error(f"--max_epochs must be at least 2 x the first budget ({2 * first} for "
                         f"{p}: the first check trains {first} and {2 * first} epochs); got "
                         f"{args.max_epochs}.")
    if 0 not in args.seeds:
        parser.error("--seeds must include 0 (selection and budget use seed 0)")
    return args


def main(argv=None, log=None):
    """Runs the study in phases over all pairs, so that an early stop leaves
    every pair's budget and selection before the extra seeds: teachers,
    budget checks, selection (seed 0), then each further seed."""
    args = parse_args(argv)
    log = log or (lambda m: print(m, flush=True))
    start = time.time()
    deadline = start + args.max_minutes * 60 if args.max_minutes > 0 else float("inf")
    base = experiment.RunConfig(teacher_epochs=args.teacher_epochs, verbose=0,
                                compare_erm=False, export="")
    pairs, results, stopped = [], [], None
    for name in args.pairs:
        pairs.append(Pair(name, base, args.workdir, deadline, log))
        results.append({})
        describe(pairs[-1], args, results[-1])
    phases = ([lambda p, o: choose_budget(p, *budget_range(p.name, args), args.converged_gain, o)]
              + [lambda p, o: select(p, args, o)]
              + [lambda p, o, s=s: evaluate_seed(p, args, o, s) for s in args.seeds if s != 0])
    try:
        for phase in phases:
            for pair, out in zip(pairs, results):
                phase(pair, out)
            write(args, results, start)
    except OutOfTime as e:
        stopped = f"time limit of {args.max_minutes:g} min reached before {e}"
        log(f"stopping: {stopped}")
        collect(pairs, args, results)
    write(args, results, start, stopped)
    return results


if __name__ == "__main__":
    main()
