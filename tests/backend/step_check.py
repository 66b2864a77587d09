"""One Distiller train step and one evaluation on the active Keras backend.

Used by test_jax_step.py, in its own process for the other backend:

    KERAS_BACKEND=tensorflow python tests/backend/step_check.py IN.npz OUT.npz [IN2.npz OUT2.npz ...]

`IN.npz` holds the batch (`x`, `y`, `sample_weight`), the `case` and the
initial weights of the teacher and student (`teacher_0`, ..., `student_0`,
...). `OUT.npz` gets the step's logs (`train_<name>`), the evaluation's logs
(`eval_<name>`) and the teacher's and student's weights after the step.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kdtf  # noqa: E402

FEATURES, CLASSES = 40, 10
CASES = ("kd_dist", "synthetic", "loss_scale")


def build_models():
    """Teacher (BatchNorm, Dropout) and student (BatchNorm), built."""
    inp = keras.Input((FEATURES,))
    h = keras.layers.Dense(32)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.3)(keras.layers.ReLU()(h))
    teacher = keras.Model(inp, keras.layers.Dense(CLASSES)(h), name="teacher")
    inp = keras.Input((FEATURES,))
    h = keras.layers.Dense(16)(inp)
    h = keras.layers.BatchNormalization()(h)
    student = keras.Model(
        inp, keras.layers.Dense(CLASSES)(keras.layers.ReLU()(h)), name="student"
    )
    return teacher, student


def distiller(case, teacher, student):
    """A compiled Distiller for one of `CASES`, with SGD (no Adam sign noise)."""
    sampler = None
    if case == "synthetic":
        # Noise of scale 0 around a random permutation of the batch: TF and
        # JAX draw different permutations, but every loss term, the student's
        # BatchNorm statistics and the gradients are invariant to the order
        # of the synthetic rows, so the synthetic term can be compared.
        sampler = kdtf.samplers.GaussianNoise(stddev=0.0, seed=1)
    d = kdtf.Distiller(
        teacher,
        student,
        distillation_losses=[kdtf.losses.KD(2.0), kdtf.losses.DIST(2.0)],
        distillation_loss_weights=[1.0, 0.5],
        student_loss_weight=0.3,
        sampler=sampler,
        synthetic_ratio=1.0,
        seed=2,
    )
    optimizer = keras.optimizers.SGD(0.1)
    if case == "loss_scale":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    d.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return d


def one_step(arrays):
    """Runs the step and evaluation on `arrays` (the IN.npz contents)."""
    case = str(arrays["case"])
    teacher, student = build_models()
    for model, prefix in ((teacher, "teacher"), (student, "student")):
        n = len(model.get_weights())
        model.set_weights([arrays[f"{prefix}_{i}"] for i in range(n)])
    d = distiller(case, teacher, student)
    x, y, w = arrays["x"], arrays["y"], arrays["sample_weight"]
    out = {}
    logs = d.train_on_batch(x, y, sample_weight=w, return_dict=True)
    out.update({f"train_{k}": np.asarray(v) for k, v in logs.items()})
    logs = d.evaluate(
        x, y, sample_weight=w, batch_size=len(x), verbose=0, return_dict=True
    )
    out.update({f"eval_{k}": np.asarray(v) for k, v in logs.items()})
    for model, prefix in ((teacher, "teacher"), (student, "student")):
        for i, value in enumerate(model.get_weights()):
            out[f"{prefix}_{i}"] = np.asarray(value)
    return out


def main(argv):
    paths = argv[1:]
    if not paths or len(paths) % 2:
        sys.stderr.write("usage: step_check.py IN.npz OUT.npz [IN.npz OUT.npz ...]\n")
        return 2
    for path_in, path_out in zip(paths[::2], paths[1::2]):
        arrays = dict(np.load(path_in))
        np.savez(path_out, backend=keras.backend.backend(), **one_step(arrays))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
