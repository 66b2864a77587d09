"""Fixtures for model-zoo tests: each default zoo model is built once per session."""
import pytest


@pytest.fixture(scope="session")
def zoo_model():
    """Returns `build(name)`, a cached `kdtf.models.get(name)` with default arguments."""
    from kdtf import models

    cache = {}

    def build(name):
        if name not in cache:
            cache[name] = models.get(name)
        return cache[name]

    return build
