r"""Exports a trained kdtf student (.keras) to TFLite (LiteRT) or SavedModel.

TFLite exports can be quantized (dynamic, float16, or full-integer int8) and
are verified on the test split of --dataset: top-1 agreement with the Keras
model, max output error, accuracy, file size and CPU latency are printed. An
export whose agreement is below --min_agreement (by default 99.9% for float32,
99% for float16 and dynamic, 97% for int8) ends the app with status 1 and is
kept as <output>.failed.tflite, not under --output.

Example:

  python apps/export.py --model=runs/student.keras \
      --output=runs/student_int8.tflite --format=tflite --quantization=int8 \
      --dataset=mnist1d --num_calibration=100
"""

import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

from kdtf import cli  # noqa: E402
from pipeline import export  # noqa: E402

# Every flag is a field of `pipeline.export.ExportConfig`; --model and --output
# (no default) are required; bad values exit with status 2 at parse time.
cli.define_flags(export.ExportConfig)


def main(argv):
    print(export.run(cli.validated(cli.config_from_flags(export.ExportConfig))))


if __name__ == "__main__":
    cli.run(main, interrupted="interrupted (Ctrl-C); nothing was written to --output (exports "
            "are atomic); rerun the same command to export.")
