"""Teacher caching on MNIST-1D: does a cached teacher train students as well?

Students (mnist1d_mlp) distilled with KD from the trained MNIST-1D teachers
(mnist1d_cnn, one per seed) with the teacher run online or cached by
`kdtf.caching.TeacherCache`, all else equal (KD tau=4, w=0.5, Adam 3e-3 with
cosine decay, batch 128, the same initial weights per seed):

* `online`: fixed data, teacher on every batch (as `apps/distill.py`);
* `cached`: fixed data, teacher outputs cached once (float16);
* `cached_fp32`: the same stored in float32 (isolates float16 rounding);
* `cached top-k`: the same with only the top-k logits stored;
* `online aug`: a fresh `SignalShift` view of every example each epoch,
  teacher online;
* `cached aug, K views`: K fixed `SignalShift` views per example, teacher
  outputs cached once (FKD-style); each epoch shows one view per example.

    python -m studies.teacher_caching --workdir=/work/scratch/runs \\
        --output=results/teacher_caching.md
"""
import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from kdtf import caching
from kdtf import data as data_lib
from pipeline import experiment

VARIANTS = ("online", "cached", "cached_fp32", "cached_topk", "online_aug", "cached_aug")


def augmentation():
    """The view augmentation of the study (not tuned)."""
    return caching.SignalShift(max_shift=3, scale=0.1, noise_std=0.05)


def train(cfg, splits, teacher, variant, views, top_k):
    """Trains one student; returns (student, seconds, cache or None)."""
    student = experiment._build_model(cfg.student, splits, cfg.seed + 1)
    distiller = experiment.make_distiller(cfg, teacher, student, "kd")
    x, y = splits.x_train, splits.y_train
    steps = int(np.ceil(len(x) / cfg.batch_size))
    distiller.compile(optimizer=experiment._optimizer(cfg, cfg.epochs * steps),
                      loss=experiment._task_loss(), metrics=["accuracy"])
    start = time.time()
    cache = None
    if variant == "online":
        ds = data_lib.make_dataset(x, y, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    elif variant == "online_aug":
        ds = caching.augmented_dataset(x, y, augmentation(), batch_size=cfg.batch_size,
                                       shuffle=True, seed=cfg.seed)
    else:
        augmented = variant == "cached_aug"
        cache = caching.TeacherCache.build(
            teacher, x, views=views if augmented else 1,
            augment=augmentation() if augmented else None,
            top_k=top_k if variant == "cached_topk" else None, seed=cfg.seed,
            dtype="float32" if variant == "cached_fp32" else "float16")
        ds = cache.dataset(y, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    distiller.fit(ds, epochs=cfg.epochs, verbose=0)
    return student, time.time() - start, cache


def run(cfg, seeds, views, top_k, log=print, variants=VARIANTS):
    """Every variant for every seed; returns the rows."""
    rows = []
    for seed in seeds:
        run_cfg = dataclasses.replace(cfg, seed=seed, compare_erm=False, export="", verbose=0)
        run_cfg.validate()
        experiment.seed_everything(run_cfg)
        full, splits = experiment.load_data(run_cfg)
        teacher = experiment.load_or_train_teacher(run_cfg, full)
        for variant in variants:
            experiment.seed_everything(run_cfg)
            student, seconds, cache = train(run_cfg, splits, teacher, variant, views, top_k)
            metrics = experiment.evaluate(student, splits, teacher)
            row = {"seed": seed, "variant": variant, "seconds": seconds, **metrics,
                   "cache_bytes": cache.memory_bytes if cache else None}
            rows.append(row)
            log(f"seed {seed} {variant}: test accuracy {metrics['accuracy']:.4f}, "
                f"agreement {metrics['agreement']:.4f}, {seconds:.0f} s"
                + (f", cache {cache.memory_bytes:,} bytes" if cache else ""))
    return rows


def label(variant, views, top_k):
    return {
        "online": "KD, teacher online (fixed data)",
        "cached": "KD, teacher cached (fixed data, float16)",
        "cached_fp32": "KD, teacher cached (fixed data, float32)",
        "cached_topk": f"KD, teacher cached top-{top_k} (fixed data)",
        "online_aug": "KD + SignalShift views, teacher online (fresh view per epoch)",
        "cached_aug": f"KD + SignalShift views, teacher cached ({views} views per example)",
    }[variant]


def to_markdown(rows, views, top_k, command, seconds, epochs=60):
    lines = [
        "| student (mnist1d_mlp) | test accuracy (mean ± std) | per seed | agreement with "
        "teacher | train s (mean) | cache bytes |",
        "|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        sel = [r for r in rows if r["variant"] == variant]
        if not sel:
            continue
        acc = np.array([r["accuracy"] for r in sel])
        agree = np.array([r["agreement"] for r in sel])
        std = acc.std(ddof=1) if len(acc) > 1 else 0.0
        cache = sel[0]["cache_bytes"]
        lines.append(
            f"| {label(variant, views, top_k)} | {acc.mean():.4f} ± {std:.4f} | "
            + ", ".join(f"{a:.4f}" for a in acc)
            + f" | {agree.mean():.4f} | {np.mean([r['seconds'] for r in sel]):.0f} | "
            + (f"{cache:,}" if cache else "-") + " |")
    lines += [
        "",
        f"Augmentation: `{augmentation()!r}` (not tuned). Seeds pair a teacher "
        f"(mnist1d_cnn, 60 epochs) with a student initialisation; KD tau=4, w=0.5, {epochs} epochs, "
        "batch 128, Adam 3e-3 cosine. Train seconds include building the cache.",
        "", f"Produced by `{command}` in {seconds / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--top_k", type=int, default=3)
    parser.add_argument("--workdir", default="runs", help="where the teachers are (or go)")
    parser.add_argument("--output", default="")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated, from: " + ", ".join(VARIANTS))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"--variants: unknown {v!r}; valid: {', '.join(VARIANTS)}")
    cfg = experiment.RunConfig(method="kd", epochs=args.epochs, workdir=args.workdir)
    start = time.time()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    rows = run(cfg, seeds, args.views, args.top_k, log=log, variants=variants)
    command = "python -m studies.teacher_caching " + " ".join(sys.argv[1:] if argv is None else argv)
    table = to_markdown(rows, args.views, args.top_k, command, time.time() - start, args.epochs)
    print(table)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(table)
        with open(os.path.splitext(args.output)[0] + ".json", "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
