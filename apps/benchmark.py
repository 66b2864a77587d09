"""Time kdtf.Distiller against keras.distillation.Distiller, student-only training
and teacher inference, in one process with the same models, data and settings.

Prints images/second (median over interleaved rounds), peak memory and the
ratios: kdtf / keras.distillation, kdtf's share of the bound
1/(1/student_only + 1/teacher_inference), DIST / KD and EC / KD step time,
cached-teacher KD / keras.distillation, and tf.data against in-memory inputs.
The logic is in benchmarks/benchmark.py; see its docstring for the method.

    python apps/benchmark.py --output=BENCHMARKS.md
    KERAS_BACKEND=jax python apps/benchmark.py --pairs=cifar --jit_compile=true
"""
import os
import _boot  # noqa: E402,F401  (sys.path, quiet TensorFlow; before any kdtf import)

from absl import flags  # noqa: E402

from kdtf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("pairs", ["mnist1d", "cifar"],
                  "Teacher/student pairs, comma-separated: 'mnist1d' = mnist1d_cnn -> mnist1d_mlp on "
                  "the MNIST-1D training split (float32 signals); 'cifar' = --cifar_teacher -> "
                  "--cifar_student on random uint8 32x32x3 images with 100 classes (speed only); "
                  "'applications' = keras.applications ResNet50 -> MobileNetV3Small (random weights, "
                  "logits out) on random uint8 --applications_image_size images with 1000 classes.")
flags.DEFINE_list("modes", ["kd", "dist", "extracurricular", "cached"],
                  "kdtf configurations to time besides the baselines (student-only training, teacher "
                  "inference, keras.distillation KD): 'kd' (always timed: the ratios refer to it), "
                  "'dist' (DIST loss), 'extracurricular' (KD plus a Mixup synthetic batch as large as "
                  "the real one), 'cached' (KD from teacher outputs cached once by "
                  "kdtf.caching.TeacherCache; the cache build is timed separately).")
flags.DEFINE_list("inputs", ["memory", "tfdata"],
                  "Input sources, comma-separated. 'memory' repeats one ready batch (no pipeline "
                  "work; on JAX, device arrays converted once); 'tfdata' is the real kdtf.data "
                  "pipeline (shuffle, gather, --augment; needs TensorFlow). Every "
                  "configuration runs on the first source; student-only, kdtf KD and cached KD also on "
                  "the others, plus the pipeline alone without a model.")
flags.DEFINE_integer("batch_size", 128, "Real examples per training step (the same for every "
                     "configuration).", lower_bound=2)
flags.DEFINE_integer("steps", 30, "Timed steps per measurement; a multiple of "
                     "--steps_per_execution, at least two executions (the first is not timed).",
                     lower_bound=2)
flags.DEFINE_integer("warmup_steps", 6, "Steps of the untimed warm-up call of each configuration "
                     "(tracing and compilation).", lower_bound=1)
flags.DEFINE_integer("rounds", 3, "Rounds: each round times every configuration once, in the same "
                     "order (A B A B); figures are medians over rounds. Use >= 3 for reported figures.",
                     lower_bound=1)
flags.DEFINE_integer("steps_per_execution", 1, "Keras steps_per_execution for every compile().",
                     lower_bound=1)
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "Keras jit_compile (XLA) for every compile(); 'auto' lets Keras decide (off on "
                  "CPU-only TensorFlow, on for JAX).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy of every model (logits stay float32).")
flags.DEFINE_bool("augment", False,
                  "Random crop (4 px) + horizontal flip of the uint8 images in the tf.data pipelines "
                  "(image pairs only; MNIST-1D signals are not augmented). The teacher cache then "
                  "stores --views augmented views per example. Also adds 'kdtf KD, augmented in step' "
                  "(the same crop + flip inside the train step). Without TensorFlow only the latter "
                  "runs, and the cache holds the fixed data.")
flags.DEFINE_integer("views", 4, "Augmented views per example in the teacher cache (with --augment).",
                     lower_bound=1)
flags.DEFINE_string("cifar_teacher", "resnet20", "Teacher of the 'cifar' pair (a kdtf.models name).")
flags.DEFINE_string("cifar_student", "mnist_cnn_small",
                    "Student of the 'cifar' pair (a kdtf.models name, built for 32x32x3 uint8 "
                    "inputs and 100 classes).")
flags.DEFINE_integer("cifar_examples", 4096, "Examples in the random CIFAR-shaped training set.",
                     lower_bound=2)
flags.DEFINE_integer("applications_image_size", 224,
                     "Image height and width of the 'applications' pair (224 as in ImageNet; "
                     "smaller for a quick run).", lower_bound=32)
flags.DEFINE_integer("applications_examples", 256,
                     "Examples in the random training set of the 'applications' pair (>= "
                     "--batch_size).", lower_bound=2)
flags.DEFINE_float("time_budget_s", 0.0,
                   "Seconds the run may take (0: no limit): no round starts that would end past it "
                   "and no pair starts once it is spent; the report says what was not run.",
                   lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Seed of the weights, data, shuffles and samplers.", lower_bound=0)
flags.DEFINE_string("output", "",
                    "Write the markdown report (machine, backend, settings, medians, ratios, the "
                    "exact command) here, e.g. BENCHMARKS.md, and the raw figures to <output>.json; "
                    "rewritten after every round, so a run cut short leaves its figures; "
                    "'' to print only.")


def _validator(check):
    """An absl validator from a benchmarks.benchmark check: bad values exit 2 at parse time."""
    def validate(*args):
        try:
            check(*args)
        except ValueError as e:
            raise flags.ValidationError(str(e))
        return True
    return validate


def _register_validators():
    from benchmarks import benchmark

    for name, valid in (("pairs", benchmark.PAIRS), ("modes", benchmark.MODES),
                        ("inputs", benchmark.INPUTS)):
        flags.register_validator(
            name, _validator(lambda values, n=name, v=valid: benchmark.check_choices(n, values, v)))
    flags.register_multi_flags_validator(
        ["steps", "steps_per_execution"],
        _validator(lambda f: benchmark.check_steps(f["steps"], f["steps_per_execution"])))
    flags.register_multi_flags_validator(
        ["cifar_examples", "batch_size"],
        _validator(lambda f: benchmark.check_examples(f["cifar_examples"], f["batch_size"])))


_register_validators()


def main(argv):
    from benchmarks import benchmark

    cfg = benchmark.BenchConfig(
        pairs=tuple(FLAGS.pairs), modes=tuple(FLAGS.modes), inputs=tuple(FLAGS.inputs),
        batch_size=FLAGS.batch_size, steps=FLAGS.steps, warmup_steps=FLAGS.warmup_steps,
        rounds=FLAGS.rounds, steps_per_execution=FLAGS.steps_per_execution,
        jit_compile=FLAGS.jit_compile, precision=FLAGS.precision, augment=FLAGS.augment,
        views=FLAGS.views, cifar_teacher=FLAGS.cifar_teacher, cifar_student=FLAGS.cifar_student,
        cifar_examples=FLAGS.cifar_examples,
        applications_image_size=FLAGS.applications_image_size,
        applications_examples=FLAGS.applications_examples, seed=FLAGS.seed,
        time_budget_s=FLAGS.time_budget_s,
    )
    try:
        cfg.validate()  # flag values: status 2, as absl's own flag errors
    except ValueError as e:
        cli.fail(e, status=2)
    command = benchmark.command_line()

    def write_report(result):
        benchmark.write(FLAGS.output, benchmark.to_markdown(result, command))
        benchmark.write_json(os.path.splitext(FLAGS.output)[0] + ".json", result)

    result = benchmark.run(cfg, progress=write_report if FLAGS.output else None)
    print(benchmark.to_text(result))
    if FLAGS.output:
        write_report(result)
        print(f"report: {FLAGS.output}")


if __name__ == "__main__":
    cli.run(main)
