"""Evaluate a trained model (and optionally its agreement with a teacher).

    python apps/evaluate.py --model=runs/kd_mnist1d_mlp_<fingerprint>/students/kd.keras \
        --teacher=runs/teachers/mnist1d_mnist1d_cnn_e60_s0_<fingerprint>.keras
"""
import json
import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

from absl import flags  # noqa: E402

from kdtf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Path to the .keras model to evaluate (loaded in safe mode).")
flags.DEFINE_string("teacher", "",
                    "Optional path to a .keras teacher: adds top-1 agreement and KL to the teacher.")
flags.DEFINE_string("dataset", "mnist1d",
                    "Dataset: 'mnist1d', 'mnist', 'tfds:<name>', 'npz:<path>' or 'dir:<path>' "
                    "(see apps/distill.py --help).")
flags.DEFINE_string("image_size", "", "H,W of the images of --dataset=dir:<path>.")
flags.DEFINE_string("data_dir", "", "Where TensorFlow Datasets data lives.")
flags.DEFINE_enum("split", "test", ("train", "val", "test"), "Which split to evaluate on.")
flags.DEFINE_bool("json", False, "Print the metrics as one JSON object.")
flags.mark_flag_as_required("model")


def main(argv):
    from kdtf import data
    from pipeline import experiment

    model = experiment.load_model(FLAGS.model, "--model")
    teacher = experiment.load_model(FLAGS.teacher, "--teacher") if FLAGS.teacher else None
    splits = data.load(FLAGS.dataset, data_dir=FLAGS.data_dir or None,
                       image_size=FLAGS.image_size or None)
    metrics = experiment.evaluate(model, splits, teacher, split=FLAGS.split)
    if FLAGS.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:>14}: {value:.4f}" if isinstance(value, float) else f"{key:>14}: {value:,}")


if __name__ == "__main__":
    cli.run(main)
