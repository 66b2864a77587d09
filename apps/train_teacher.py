"""Train a teacher from the model zoo and save it as a .keras file.

    python apps/train_teacher.py --model=mnist1d_cnn --epochs=60 --output=runs/teacher.keras
"""
import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

from absl import flags  # noqa: E402

from kdtf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mnist1d_cnn", "Teacher architecture: a kdtf.models name.")
flags.DEFINE_string("dataset", "mnist1d",
                    "Dataset: 'mnist1d', 'mnist', 'tfds:<name>', 'npz:<path>' or 'dir:<path>' "
                    "(see apps/distill.py --help).")
flags.DEFINE_string("image_size", "", "H,W of the images of --dataset=dir:<path>.")
flags.DEFINE_string("data_dir", "", "Where TensorFlow Datasets data lives.")
flags.DEFINE_integer("epochs", 60, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 3e-3, "Peak Adam learning rate (cosine decay to 0).",
                   lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("workdir", "runs", "Directory for TensorBoard logs and checkpoints.")
flags.DEFINE_string("output", "",
                    "Where to save the teacher (.keras); default: the cache path that "
                    "apps/distill.py reuses, <workdir>/teachers/<dataset>_<model>_e<epochs>_s<seed>_"
                    "<fingerprint>.keras (the fingerprint covers the settings and the data). The "
                    "settings and data fingerprint are written beside it (.json).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output file.")
flags.DEFINE_integer("verbose", 2, "Keras progress: 0 silent, 1 progress bar, 2 one line per epoch.",
                     lower_bound=0, upper_bound=2)


def main(argv):
    from pipeline import experiment

    if FLAGS.output and not FLAGS.output.endswith(".keras"):
        raise ValueError(f"--output must end in .keras; got {FLAGS.output!r}.")
    cfg = experiment.RunConfig(
        teacher=FLAGS.model, dataset=FLAGS.dataset, image_size=FLAGS.image_size,
        data_dir=FLAGS.data_dir, overwrite=FLAGS.overwrite, teacher_epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, seed=FLAGS.seed,
        workdir=FLAGS.workdir, verbose=FLAGS.verbose,
    ).validate()
    full, _ = experiment.load_data(cfg)
    path = FLAGS.output or experiment.teacher_path(cfg, full)
    teacher = experiment.train_teacher(cfg, full, path)
    metrics = experiment.evaluate(teacher, full)
    print(f"teacher {FLAGS.model}: test accuracy {metrics['accuracy']:.4f}, "
          f"ECE {metrics['ece']:.3f}, {metrics['params']:,} parameters")
    print(f"saved: {path}")


if __name__ == "__main__":
    cli.run(main)
