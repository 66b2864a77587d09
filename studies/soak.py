"""Soak test: train for a wall-clock budget and watch memory (issue 8).

Distils the MNIST-1D teacher into the MLP student with extracurricular
learning (a fitted Gaussian mixture sampler, so the sampler, the teacher and
the student all run every step), with every callback the apps use
(NonFiniteGuard, TensorBoard per step, learning-rate logging, the atomic
per-epoch BackupAndRestore), one `fit` call per chunk of epochs until the
budget is spent, as a long run with evaluation in between would. RSS is
sampled after every epoch (`kdtf.callbacks.MemoryLogger`); growth is
measured from the end of the warm-up epochs (tracing, allocator pools) to
the last epoch.

    python -m studies.soak --minutes=30 --output=results/soak.md
"""
import argparse
import json
import os
import statistics
import sys
import time

import keras


def run(minutes, workdir, epochs_per_fit=10, warmup=3, seed=0):
    """Trains until `minutes` have passed; returns a dict with the RSS series."""
    from kdtf import callbacks as callbacks_lib
    from pipeline import experiment

    cfg = experiment.RunConfig(method="extracurricular", sampler="gmm", epochs=epochs_per_fit,
                               workdir=workdir, verbose=0, compare_erm=False, seed=seed)
    experiment.seed_everything(cfg)
    full, splits = experiment.load_data(cfg)
    teacher = experiment.load_or_train_teacher(cfg, full)
    student = experiment._build_model(cfg.student, splits, seed + 1)
    distiller = experiment.make_distiller(cfg, teacher, student, "extracurricular", splits.x_train)
    train, val = experiment._datasets(cfg, splits, seed)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), loss=experiment._task_loss(),
                      metrics=["accuracy"])
    memory = callbacks_lib.MemoryLogger()
    start, fits, accuracy = time.time(), 0, []
    while time.time() - start < minutes * 60:
        # A fresh run directory per call (a backup must never be restored here).
        callbacks = [memory, *experiment._callbacks(cfg, f"soak_fit{fits}", f"t{int(start)}")]
        history = distiller.fit(train, validation_data=val, epochs=epochs_per_fit, verbose=0,
                                shuffle=False, callbacks=callbacks)
        accuracy.append(float(history.history["val_accuracy"][-1]))
        fits += 1
        print(f"[soak] {time.time() - start:6.0f} s, {len(memory.history)} epochs, "
              f"RSS {memory.history[-1][2]:.0f} MiB, val accuracy {accuracy[-1]:.3f}", flush=True)
    rss = [r[2] for r in memory.history]
    return {
        "minutes": (time.time() - start) / 60, "epochs": len(rss), "fit_calls": fits,
        "warmup_epochs": warmup, "rss_mib": rss, "seconds": [r[1] for r in memory.history],
        "growth": callbacks_lib.MemoryLogger.growth(memory.history, warmup=warmup),
        "slope_kib_per_epoch": _slope_kib(rss[warmup:]),
        "rss_min": min(rss), "rss_max": max(rss), "val_accuracy": accuracy,
        "steps_per_epoch": len(train),
    }


def _slope_kib(rss):
    """Least-squares RSS growth per epoch, KiB."""
    if len(rss) < 2:
        return 0.0
    return 1024 * statistics.linear_regression(range(len(rss)), rss).slope


def to_markdown(res, command):
    rss = res["rss_mib"]
    w = res["warmup_epochs"]
    verdict = "passes" if res["growth"] < 0.05 else "FAILS"
    tenths = [rss[min(len(rss) - 1, round(i * (len(rss) - 1) / 10))] for i in range(11)]
    return "\n".join([
        "# Soak test: memory over a long CPU run", "",
        f"`{command}`: {res['minutes']:.1f} min, {res['epochs']} epochs of "
        f"{res['steps_per_epoch']} steps in {res['fit_calls']} `fit` calls (MNIST-1D, "
        "extracurricular with a fitted GMM sampler, every app callback).", "",
        f"RSS after warm-up (epoch {w}): {rss[w - 1]:.0f} MiB; last epoch: {rss[-1]:.0f} MiB; "
        f"min {res['rss_min']:.0f}, max {res['rss_max']:.0f} MiB. "
        f"**Growth {100 * res['growth']:+.2f}%** (target < 5%: {verdict}); least-squares slope after "
        f"warm-up {res.get('slope_kib_per_epoch', float('nan')):.1f} KiB/epoch.", "",
        "RSS (MiB) at each tenth of the run: " + ", ".join(f"{v:.0f}" for v in tenths), "",
        "Validation accuracy after each fit call: "
        + ", ".join(f"{a:.3f}" for a in res["val_accuracy"]), "",
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="Wall-clock budget.")
    parser.add_argument("--epochs_per_fit", type=int, default=10, help="Epochs per fit() call.")
    parser.add_argument("--warmup", type=int, default=3, help="Epochs before the baseline RSS.")
    parser.add_argument("--workdir", default="runs", help="Teacher cache and run files.")
    parser.add_argument("--output", default="", help="Markdown report (a .json is written beside).")
    args = parser.parse_args(argv)
    res = run(args.minutes, args.workdir, args.epochs_per_fit, args.warmup)
    command = "python -m studies.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    text = to_markdown(res, command)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.output)[0] + ".json", "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
