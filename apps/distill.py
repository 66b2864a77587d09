"""Distil a teacher into a student, compare with plain training, export TFLite.

With no flags: trains (or reuses) an MNIST-1D CNN teacher, trains an MLP
student on labels alone (ERM) and with extracurricular learning (KD on real
inputs and on inputs drawn from a Gaussian mixture fitted to them, at the
settings results/defaults.md selects on validation), prints the three accuracies
and exports the distilled student to student.tflite in the run's directory,
runs/<method>_<student>_<fingerprint>/ (printed; named by the settings and the
data, so a run never replaces another one's files).

    python apps/distill.py
    python apps/distill.py --method=kd
    python apps/distill.py --method=dist --temperature=4 --epochs=100
    python apps/distill.py --teacher=my_teacher.keras --student=my_student.keras \
        --dataset=dir:my_images --image_size=64,64

Every flag is a field of `pipeline.experiment.RunConfig` (the flags are generated
from it, methods and their settings from the registry `kdtf.methods`).
"""
import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

from kdtf import cli  # noqa: E402
from pipeline import experiment  # noqa: E402

cli.define_flags(experiment.RunConfig)


def main(argv):
    result = experiment.run(cli.config_from_flags(experiment.RunConfig))
    print(experiment.summary(result))
    print(f"results: {result['results_file']}")


if __name__ == "__main__":
    cli.run(main)
