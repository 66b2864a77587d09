"""Repeat distillation methods over seeds and write a results table.

    python apps/study.py --methods=none,kd,dist --seeds=0,1,2 --output=results/mnist1d_kd.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from kdtf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", ["none", "kd", "dist"],
                  "Comma-separated methods: none, kd, dist, extracurricular, fitnets, sskd. Every "
                  "method is checked against the models and data before the first one trains.")
flags.DEFINE_string("sampler", "mixup", "Sampler of extracurricular: mixup, cutmix, noise, gmm, uniform.")
flags.DEFINE_float("synthetic_loss_weight", 1.0, "Weight of the synthetic distillation term.",
                   lower_bound=0.0)
flags.DEFINE_float("synthetic_ratio", 1.0, "Synthetic examples per real example.", lower_bound=0.0)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Comma-separated integer seeds; one teacher per seed.")
flags.DEFINE_string("dataset", "mnist1d", "Dataset name (see apps/distill.py --help).")
flags.DEFINE_string("image_size", "", "H,W of the images of --dataset=dir:<path>.")
flags.DEFINE_string("data_dir", "", "Where TensorFlow Datasets data lives.")
flags.DEFINE_string("teacher", "mnist1d_cnn",
                    "Teacher: a kdtf.models name (one per seed, trained or reused) or a .keras file.")
flags.DEFINE_string("student", "mnist1d_mlp", "Student: a kdtf.models name or a .keras file.")
flags.DEFINE_integer("epochs", 60, "Student epochs.", lower_bound=1)
flags.DEFINE_integer("teacher_epochs", 60, "Teacher epochs.", lower_bound=1)
flags.DEFINE_float("temperature", 4.0, "Distillation temperature.", lower_bound=1e-6)
flags.DEFINE_float("student_loss_weight", 0.5, "Task-loss weight w; distillation gets 1 - w.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("label_fraction", 1.0, "Share of training labels the students see.",
                   lower_bound=1e-6, upper_bound=1.0)
flags.DEFINE_string("workdir", "runs", "Directory for teachers, logs and checkpoints.")
flags.DEFINE_string("output", "",
                    "Write the markdown table (and a .json beside it) here; an existing file is an "
                    "error unless --overwrite.")
flags.DEFINE_bool("overwrite", False,
                  "Replace an existing --output table, or retrain a cached teacher whose settings "
                  "record does not match.")


def main(argv):
    import json

    from kdtf import experiment

    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers; got {FLAGS.seeds}.")
    if FLAGS.output and not FLAGS.overwrite:
        for path in (FLAGS.output, os.path.splitext(FLAGS.output)[0] + ".json"):
            if os.path.exists(path):
                raise FileExistsError(f"output: {path!r} already exists; pass --overwrite to "
                                      "replace it, or choose another --output.")
    cfg = experiment.RunConfig(
        dataset=FLAGS.dataset, image_size=FLAGS.image_size, data_dir=FLAGS.data_dir,
        overwrite=FLAGS.overwrite, teacher=FLAGS.teacher, student=FLAGS.student, epochs=FLAGS.epochs,
        teacher_epochs=FLAGS.teacher_epochs, temperature=FLAGS.temperature,
        student_loss_weight=FLAGS.student_loss_weight, label_fraction=FLAGS.label_fraction,
        workdir=FLAGS.workdir, verbose=0, sampler=FLAGS.sampler,
        synthetic_loss_weight=FLAGS.synthetic_loss_weight, synthetic_ratio=FLAGS.synthetic_ratio,
    )
    rows = experiment.study(cfg, FLAGS.methods, seeds)
    table = experiment.study_table(rows, command="python apps/study.py " + " ".join(sys.argv[1:]))
    print(table)
    if FLAGS.output:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
        with open(FLAGS.output, "w") as f:
            f.write(table + "\n")
        with open(os.path.splitext(FLAGS.output)[0] + ".json", "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    cli.run(main)
