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
