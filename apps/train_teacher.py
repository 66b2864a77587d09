"""Train a teacher from the model zoo and save it as a .keras file.

    python apps/train_teacher.py --model=mnist1d_cnn --epochs=60 --output=runs/teacher.keras
"""
import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

from absl import flags  # noqa: E402

from kdtf import cli  # noqa: E402
from kdtf import models  # noqa: E402
from pipeline import experiment  # noqa: E402

FLAGS = flags.FLAGS
# The settings a teacher shares with a distillation run come from RunConfig (the
# same defaults, so apps/distill.py reuses the teacher this app trains).
SHARED = ("dataset", "image_size", "data_dir", "batch_size", "seed",
          "teacher_augmentation", "workdir", "overwrite", "verbose")
cli.define_flags(experiment.RunConfig, names=SHARED)
# The teacher's learning rate (RunConfig.teacher_learning_rate: what apps/distill.py trains with).
flags.DEFINE_float("learning_rate", None, "Peak Adam learning rate (cosine decay to 0). Default: "
                   + experiment.dataset_default_help("teacher_learning_rate") + ".",
                   lower_bound=1e-12)
flags.DEFINE_string("model", "mnist1d_cnn", "Teacher architecture: a kdtf.models name.")
flags.DEFINE_integer("epochs", experiment.RunConfig.teacher_epochs, "Training epochs.",
                     lower_bound=1)
flags.DEFINE_string("output", "",
                    "Where to save the teacher (.keras); default: the cache path that "
                    "apps/distill.py reuses, <workdir>/teachers/<dataset>_<model>_e<epochs>_s<seed>_"
                    "<fingerprint>.keras (the fingerprint covers the settings and the data). The "
                    "settings and data fingerprint are written beside it (.json).")


def main(argv):
    if FLAGS.output and not FLAGS.output.endswith(".keras"):
        raise ValueError(f"--output must end in .keras; got {FLAGS.output!r}.")
    if FLAGS.model not in models.available():
        raise ValueError(f"--model: unknown {FLAGS.model!r}; valid: {', '.join(models.available())}.")
    cfg = cli.config_from_flags(experiment.RunConfig, names=SHARED, teacher=FLAGS.model,
                                teacher_epochs=FLAGS.epochs,
                                teacher_learning_rate=FLAGS.learning_rate).validate()
    full, _ = experiment.load_data(cfg)
    path = FLAGS.output or experiment.teacher_path(cfg, full)
    teacher = experiment.train_teacher(cfg, full, path)
    metrics = experiment.evaluate(teacher, full)
    print(f"teacher {FLAGS.model}: test accuracy {metrics['accuracy']:.4f}, "
          f"ECE {metrics['ece']:.3f}, {metrics['params']:,} parameters")
    print(f"saved: {path}")


if __name__ == "__main__":
    cli.run(main)
