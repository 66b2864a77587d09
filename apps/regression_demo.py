"""Extracurricular learning for regression, on a 1-D toy you can look at.

Trains a Gaussian-head teacher (mean and variance, GaussianNLL) on the
heteroscedastic sine `y = sin(3x) + noise` (noise std grows with x, no data
in x in (0.1, 0.5)), then three small students on 40 labelled points: ERM
(labels only), KD on the teacher's means, and extracurricular learning
(KL(teacher || student) on real and sampled inputs). Prints test RMSE/NLL
and saves a PNG of every model's mean +- 2 std over the input range.

    python apps/regression_demo.py --output=runs/regression_demo.png
    python apps/regression_demo.py --sampler=noise --epochs=5
"""
import os
import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

from absl import flags  # noqa: E402

from kdtf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 15,
                     "Training length in epochs of 100 optimizer steps: each student takes "
                     "100 * epochs steps on its 40 labelled points, the teacher twice as many "
                     "on all 400 training points.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Random seed: data draw, initialisation, shuffling, sampling.")
flags.DEFINE_string("output", "runs/regression_demo.png",
                    "Path of the PNG to write (directories are created).")
flags.DEFINE_enum("sampler", "uniform", ("uniform", "noise", "mixup", "gmm"),
                  "Synthetic inputs of the extracurricular student: 'uniform' over the batch's "
                  "input box +10% (covers the gap), 'noise' = real inputs + Gaussian noise, "
                  "'mixup' = convex mixes of two real inputs, 'gmm' = a Gaussian mixture fitted "
                  "to the training inputs.")
flags.DEFINE_integer("verbose", 0, "Keras progress: 0 silent, 1 progress bar, 2 one line per epoch.",
                     lower_bound=0, upper_bound=2)


def main(argv):
    del argv
    from studies import regression

    if not FLAGS.output.lower().endswith(".png"):
        raise ValueError(f"--output must be a .png path; got {FLAGS.output!r}.")
    cfg = regression.SETTINGS["sine"]
    data = regression.heteroscedastic_sine(seed=FLAGS.seed)
    steps = 100 * FLAGS.epochs
    teacher = regression.fit_teacher(data, cfg["teacher"], 2 * steps, cfg["batch_size"],
                                     cfg["learning_rate"], FLAGS.seed, FLAGS.verbose)
    models = {"teacher": teacher}
    titles = {"erm": "student ERM", "kd_means": "student KD on means",
              "extracurricular": f"student extracurricular ({FLAGS.sampler})"}
    for method, title in titles.items():
        models[title] = regression.fit_student(
            method, data, teacher, cfg["student"], steps, FLAGS.sampler, cfg["batch_size"],
            cfg["learning_rate"], seed=FLAGS.seed, verbose=FLAGS.verbose)
    labelled = {}
    for title, model in models.items():
        m = regression.evaluate(model, data, None if model is teacher else teacher)
        line = f"RMSE {m['rmse']:.3f}, NLL {m['nll']:.2f}"
        if "kl_to_teacher" in m:
            line += f", KL to teacher {m['kl_to_teacher']:.3f}"
        print(f"{title:40s} {line}")
        labelled[f"{title}: {line}"] = model
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    regression.plot_predictions(labelled, data, FLAGS.output)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    cli.run(main)
