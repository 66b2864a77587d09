"""A pytest plugin that makes Keras's own distillation tests use `kdtf.Distiller`.

Keras ships `keras/src/distillation/distiller_test.py` and
`distillation_loss_test.py` inside its wheel. Both import `Distiller` from
`keras.src.distillation.distiller` when they are collected. This plugin, loaded
with `-p tests.keras_compat.switch_distiller`, replaces that one name with
`kdtf.Distiller` before collection, so the tests run unchanged against kdtf with
Keras's own loss objects (`LogitsDistillation`, `FeatureDistillation`). It is
the "one-line switch" a keras.distillation user makes.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_configure(config):
    del config
    import keras.src.distillation.distiller as keras_distiller

    import kdtf

    keras_distiller.Distiller = kdtf.Distiller
