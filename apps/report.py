"""An HTML report comparing the teacher, the ERM student and the distilled student of a run.

Reads the results JSON that apps/distill.py writes, loads the run's teacher and
students from its workdir, and writes one self-contained page (figures
embedded, and also written as PNGs beside it):

    python apps/distill.py --method=kd
    python apps/report.py --results=runs/kd_mnist1d_mlp_<fingerprint>/results.json
    chromium runs/report/report.html
"""
import os
import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

from absl import flags  # noqa: E402

from kdtf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("results", None,
                    "Results JSON of a run of apps/distill.py (results.json in the run directory "
                    "it prints, <workdir>/<method>_<student>_<fingerprint>/). It names the teacher "
                    "and student files, which are loaded from where they were saved (or, for a "
                    "moved workdir, from beside the results file).")
flags.DEFINE_string("output", "",
                    "Directory to write report.html, figures/*.png, tflite/*.tflite and "
                    "report.json to (created). Default: report/ inside the run directory. An "
                    "earlier report there is an error unless --overwrite.")
flags.DEFINE_bool("overwrite", False, "Replace the files of an earlier report in --output.")
flags.DEFINE_enum("split", "test", ("test", "val"), "Which split every model is evaluated on.")
flags.DEFINE_integer("num_bins", 15, "Confidence bins of the reliability diagrams and ECE.",
                     lower_bound=1, upper_bound=100)
flags.DEFINE_bool("tflite", True,
                  "Export every model with kdtf.export.tflite, verify it with the LiteRT "
                  "interpreter and report its size, latency and agreement with Keras.")
flags.DEFINE_enum("quantization", "run", ("run", "none", "dynamic", "float16", "int8"),
                  "TFLite quantization of those exports: 'run' = the run's --quantization, or "
                  "none (float32), dynamic-range, float16, full int8.")
flags.DEFINE_bool("embed_images", True,
                  "Embed the figures in report.html (one file to share); with --noembed_images "
                  "the page links figures/*.png instead. The PNGs are written either way.")
flags.mark_flag_as_required("results")


def main(argv):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        cli.fail("the report draws its figures with matplotlib: pip install 'kdtf[plots]'.")
    from pipeline import experiment
    from pipeline.report import build

    output = FLAGS.output or os.path.join(os.path.dirname(os.path.abspath(FLAGS.results)), "report")
    if not FLAGS.overwrite and os.path.exists(os.path.join(output, build.REPORT_FILE)):
        raise FileExistsError(f"output: {output!r} already holds a report; pass --overwrite to "
                              "replace it, or choose another --output.")
    path = build.build_report(
        FLAGS.results, output, split=FLAGS.split, num_bins=FLAGS.num_bins, tflite=FLAGS.tflite,
        quantization=FLAGS.quantization, embed_images=FLAGS.embed_images,
        log=lambda message: experiment._log(None, message),
    )
    print(f"report: {path}")


if __name__ == "__main__":
    cli.run(main)
