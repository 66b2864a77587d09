"""The teacher and student of the distribution checks (imported by the
*_check.py scripts, which run in their own processes)."""
import keras


def teacher_and_student():
    """A seeded 10 -> 16 -> 5 teacher and 10 -> 8 -> 5 student (tanh MLPs)."""
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="tanh"),
                                keras.layers.Dense(5)])
    student = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="tanh"),
                                keras.layers.Dense(5)])
    return teacher, student


def stage_teacher_and_student():
    """Seeded two-stage MLPs (layers "stage1", "stage2") for SSKD: 10 -> 12 -> 8 -> 5.

    The student's stages have the teacher's widths, so SSKD needs no adapter
    (whose BatchNorm would use per-replica batch statistics); the teacher's
    BatchNorm runs in inference mode.
    """
    keras.utils.set_random_seed(0)

    def net(name, hidden, batchnorm):
        inputs = keras.Input((10,))
        h = keras.layers.Dense(12, name="dense1")(inputs)
        if batchnorm:
            h = keras.layers.BatchNormalization(name="bn1")(h)
        h = keras.layers.Activation("tanh", name="stage1")(h)
        h = keras.layers.Dense(hidden, name="dense2")(h)
        h = keras.layers.Activation("tanh", name="stage2")(h)
        return keras.Model(inputs, keras.layers.Dense(5, name="logits")(h), name=name)

    return net("teacher", 8, True), net("student", 8, False)
