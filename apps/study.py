"""Repeat distillation methods over seeds and write a results table.

    python apps/study.py --methods=none,kd,dist --seeds=0,1,2 --output=results/mnist1d_kd.md
"""
import os
import sys

import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

import dataclasses  # noqa: E402

from absl import flags  # noqa: E402

from kdtf import cli  # noqa: E402
from pipeline import experiment  # noqa: E402

FLAGS = flags.FLAGS
# The run settings a study repeats: RunConfig's fields, generated (same defaults as the library).
_SETTINGS = [f.name for f in dataclasses.fields(experiment.RunConfig)
             if f.name not in ("method", "seed", "compare_erm", "export", "min_agreement",
                               "quantization", "verbose")]
cli.define_flags(experiment.RunConfig, names=_SETTINGS)
flags.DEFINE_list("methods", ["none", "kd", "dist"],
                  f"Comma-separated methods ({', '.join(experiment.METHODS)}). Every method is "
                  "checked against the models and data before the first one trains.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Comma-separated integer seeds; one teacher per seed.")
flags.DEFINE_string("output", "",
                    "Write the markdown table (and a .json beside it) here; an existing file is an "
                    "error unless --overwrite.")


def main(argv):
    import json

    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers; got {FLAGS.seeds}.")
    if FLAGS.output and not FLAGS.overwrite:
        for path in (FLAGS.output, os.path.splitext(FLAGS.output)[0] + ".json"):
            if os.path.exists(path):
                raise FileExistsError(f"output: {path!r} already exists; pass --overwrite to "
                                      "replace it, or choose another --output.")
    cfg = cli.config_from_flags(experiment.RunConfig, names=_SETTINGS, verbose=0)
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
