"""Time kdtf.Distiller against keras.distillation.Distiller, student-only training
and teacher inference, in one process with the same models, data and settings.

Prints images/second (median over interleaved rounds), peak memory and the
ratios: kdtf / keras.distillation, kdtf's share of the bound
1/(1/student_only + 1/teacher_inference), DIST / KD and EC / KD step time,
cached-teacher KD / keras.distillation, and tf.data against in-memory inputs.
With the 'methods' mode (not in the default) it also times one train step of
every distillation method of the registry (kdtf.methods), interleaved with KD,
and tables each one's ms/step and step time x KD ('not applicable: <reason>'
where the pair cannot run it). The logic is in benchmarks/benchmark.py; see its
docstring for the method.

    python apps/benchmark.py --output=BENCHMARKS.md
    python apps/benchmark.py --pairs=cifar --modes=kd,methods --inputs=memory
    KERAS_BACKEND=jax python apps/benchmark.py --pairs=cifar --jit_compile=true
"""
import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

from absl import flags  # noqa: E402

from benchmarks import benchmark  # noqa: E402
from kdtf import cli  # noqa: E402

# Every flag but --output is a field of `benchmarks.benchmark.BenchConfig`; bad
# values exit with status 2, most at parse time, the rest from its validate().
cli.define_flags(benchmark.BenchConfig)
_OUTPUT = flags.DEFINE_string(
    "output", "",
    "Write the markdown report (machine, backend, settings, medians, ratios, the "
    "exact command) here, e.g. BENCHMARKS.md, and the raw figures to <output>.json; "
    "rewritten after every round, so a run cut short leaves its figures; "
    "'' to print only.")


def main(argv):
    cfg = cli.validated(cli.config_from_flags(benchmark.BenchConfig))
    result = benchmark.run_and_write(cfg, _OUTPUT.value)
    print(benchmark.to_text(result))
    if _OUTPUT.value:
        print(f"report: {_OUTPUT.value}")


if __name__ == "__main__":
    cli.run(main)
