"""Gaussian-mixture sampler fitted to the training inputs."""

import math

import keras
import numpy as np
from keras import ops

from kdtf.backend import tfp as tfp_backend
from kdtf.samplers.base import Sampler

_COVARIANCES = ("diag", "spherical")


def _collect_inputs(data, max_samples):
    """Returns up to `max_samples` inputs of `data` as a float64 numpy array."""
    if isinstance(data, (tuple, list)) and data and not np.isscalar(data[0]):
        data = data[0]  # (x, y) pair of arrays.
    if hasattr(data, "element_spec") and hasattr(data, "as_numpy_iterator"):
        # A tf.data.Dataset, assumed batched like for `Model.fit`.
        batches, count = [], 0
        for element in data.as_numpy_iterator():
            if isinstance(element, dict):
                raise TypeError(
                    "GaussianMixture.fit needs a dataset of `x` or `(x, y)` "
                    "with a single input tensor; received a dict element."
                )
            x = element[0] if isinstance(element, tuple) else element
            x = np.asarray(x)
            batches.append(x)
            count += x.shape[0]
            if count >= max_samples:
                break
        if not batches:
            raise ValueError("GaussianMixture.fit received an empty dataset.")
        array = np.concatenate(batches, axis=0)
    else:
        try:
            array = np.asarray(data)
        except Exception as e:  # noqa: BLE001
            raise TypeError(
                "`data` must be a numpy array, a tensor, or a tf.data.Dataset "
                f"of `x` or `(x, y)`; received {type(data).__name__}."
            ) from e
        if array.dtype == object:
            raise TypeError(
                "`data` must be a numpy array, a tensor, or a tf.data.Dataset "
                f"of `x` or `(x, y)`; received {type(data).__name__}."
            )
    if array.ndim < 2:
        raise ValueError(
            "`data` must have a batch dimension and at least one feature "
            f"dimension; received shape {array.shape}."
        )
    return array[:max_samples].astype("float64")


def _kmeans_plus_plus(x, k, rng):
    n = x.shape[0]
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    dist2 = np.sum((x - centres[0]) ** 2, axis=1)
    for i in range(1, k):
        total = dist2.sum()
        if total > 0:
            choice = rng.choice(n, p=dist2 / total)
        else:
            choice = rng.integers(n)
        centres[i] = x[choice]
        dist2 = np.minimum(dist2, np.sum((x - centres[i]) ** 2, axis=1))
    return centres


def _sq_distances(x, centres):
    return (
        np.sum(x * x, axis=1, keepdims=True)
        - 2.0 * x @ centres.T
        + np.sum(centres * centres, axis=1)[None, :]
    )


def _log_prob(x, x2, means, variances, log_weights):
    """Per-component log joint `[N, K]` of a diagonal Gaussian mixture."""
    inv = 1.0 / variances
    maha = x2 @ inv.T - 2.0 * x @ (means * inv).T
    maha += np.sum(means * means * inv, axis=1)[None, :]
    log_det = np.sum(np.log(variances), axis=1)
    d = x.shape[1]
    return -0.5 * (d * math.log(2 * math.pi) + log_det[None, :] + maha) + (
        log_weights[None, :]
    )


def _m_step(x, x2, resp, reg, spherical):
    """Weighted means, variances and log-weights from responsibilities."""
    nk = resp.sum(axis=0) + 10 * np.finfo("float64").eps
    log_weights = np.log(nk / x.shape[0])
    means = (resp.T @ x) / nk[:, None]
    variances = (resp.T @ x2) / nk[:, None] - means * means
    variances = np.maximum(variances, 0.0) + reg
    if spherical:
        variances = np.repeat(
            variances.mean(axis=1, keepdims=True), x.shape[1], axis=1
        )
    return means, variances, log_weights


@keras.saving.register_keras_serializable(package="kdtf")
class GaussianMixture(Sampler):
    """Samples from a Gaussian mixture fitted to the training inputs.

    Inputs are flattened to `D` features. `fit()` runs k-means++ seeding,
    a few k-means (Lloyd) steps and then EM in numpy (float64) for a mixture
    of `num_components` Gaussians with diagonal (or spherical) covariance.
    The fitted `means` `[K, D]`, `scales` `[K, D]` (standard deviations) and
    `mixture_weights` `[K]` are kept as non-trainable variables and in the
    config (as lists), so a fitted mixture round-trips through
    `get_config()`/`from_config()` and `.keras` files.

    Sampling draws from `tfd.MixtureSameFamily(tfd.Categorical,
    tfd.MultivariateNormalDiag)` and reshapes to the per-example shape of
    `x_real` (whose values are otherwise unused). XLA
    (`jit_compile=True`): supported.

    Fit before tracing a train step that samples from the mixture: a
    traced function keeps the variables it captured, and refitting to
    another input size creates new ones.

    Args:
        num_components: int >= 1, number of mixture components K.
        covariance: one of "diag" (per-feature variance per component) or
            "spherical" (one variance per component).
        means, scales, mixture_weights: fitted parameters (normally set by
            `fit()` or by `from_config()`), nested lists / arrays.
        feature_shape: per-example shape of the fitted data (informational).
        seed: int or None, seed of the sampler's own `SeedGenerator`; also
            seeds the k-means++ initialisation in `fit()`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> gmm = GaussianMixture(num_components=10, seed=0).fit(x_train)
    >>> x_syn = gmm(x_batch, seed=1)
    """

    def __init__(
        self,
        num_components=10,
        covariance="diag",
        means=None,
        scales=None,
        mixture_weights=None,
        feature_shape=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if (
            isinstance(num_components, bool)
            or not isinstance(num_components, (int, np.integer))
            or num_components < 1
        ):
            raise ValueError(
                "`num_components` must be a positive int; received "
                f"num_components={num_components!r}."
            )
        if covariance not in _COVARIANCES:
            raise ValueError(
                f"`covariance` must be one of {list(_COVARIANCES)}; "
                f"received covariance={covariance!r}."
            )
        self.num_components = int(num_components)
        self.covariance = covariance
        self.feature_shape = (
            None if feature_shape is None else tuple(feature_shape)
        )
        self._means = None
        self._scales = None
        self._logits = None
        given = [p is not None for p in (means, scales, mixture_weights)]
        if any(given) and not all(given):
            raise ValueError(
                "`means`, `scales` and `mixture_weights` must be given "
                "together (or none of them)."
            )
        if all(given):
            self._set_parameters(
                np.asarray(means, "float64"),
                np.asarray(scales, "float64"),
                np.asarray(mixture_weights, "float64"),
            )

    @property
    def fitted(self):
        """Whether the mixture has parameters (from `fit` or a config)."""
        return self._means is not None

    @property
    def num_features(self):
        """Flattened input size D of the fitted mixture, or None."""
        return None if self._means is None else int(self._means.shape[1])

    def _set_parameters(self, means, scales, weights):
        k = self.num_components
        if means.ndim != 2 or means.shape[0] != k:
            raise ValueError(
                f"`means` must have shape [num_components={k}, D]; received "
                f"shape {means.shape}."
            )
        if scales.shape != means.shape:
            raise ValueError(
                f"`scales` must have the shape of `means` {means.shape}; "
                f"received shape {scales.shape}."
            )
        if weights.shape != (k,):
            raise ValueError(
                f"`mixture_weights` must have shape ({k},); received shape "
                f"{weights.shape}."
            )
        if np.any(scales <= 0) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(
                "`scales` must be > 0 and `mixture_weights` >= 0 with a "
                "positive sum."
            )
        weights = weights / weights.sum()
        with np.errstate(divide="ignore"):
            logits = np.log(weights)
        logits = np.maximum(logits, -1e30)
        values = {"means": means, "scales": scales, "logits": logits}
        if self._means is not None and self._means.shape != means.shape:
            # Refit on data of another size: replace the variables.
            for attr in ("_means", "_scales", "_logits"):
                delattr(self, attr)
                setattr(self, attr, None)
        if self._means is None:
            # The variables' shapes are only known once fitted, which may be
            # after the layer was built (called); Keras locks a built layer's
            # state, so unlock it while adding them, as Keras's own
            # `_untrack_variable` does.
            was_locked = self._tracker.locked
            self._tracker.unlock()
            try:
                for name, value in values.items():
                    var = self.add_weight(
                        shape=value.shape,
                        initializer="zeros",
                        dtype="float32",
                        trainable=False,
                        name=name,
                    )
                    setattr(self, "_" + name, var)
            finally:
                if was_locked:
                    self._tracker.lock()
        for name, value in values.items():
            getattr(self, "_" + name).assign(value.astype("float32"))

    def fit(
        self,
        data,
        iterations=50,
        kmeans_iterations=10,
        tol=1e-4,
        reg_covar=1e-6,
        max_samples=50000,
        verbose=False,
    ):
        """Fits the mixture to training inputs with k-means++ and EM (numpy).

        Args:
            data: numpy array / tensor `[N, ...]`, an `(x, y)` tuple of
                arrays, or a batched `tf.data.Dataset` of `x` or `(x, y)`
                (or `(x, y, sample_weight)`).
            iterations: int, maximum number of EM iterations.
            kmeans_iterations: int, Lloyd iterations after k-means++ seeding.
            tol: float, stop when the mean log-likelihood per example
                improves by less than this.
            reg_covar: float, added to every variance, relative to the mean
                feature variance of the data (keeps constant features, such
                as blank image borders, from collapsing to zero variance).
            max_samples: int, at most this many inputs are used.
            verbose: bool, print the log-likelihood per EM iteration.

        Returns:
            `self`, fitted. `self.log_likelihood_` holds the final mean
            log-likelihood per example, `self.converged_` whether EM met
            `tol`.

        Example:

        >>> gmm = GaussianMixture(num_components=2, seed=0).fit(x)
        """
        x = _collect_inputs(data, int(max_samples))
        feature_shape = x.shape[1:]
        x = x.reshape(x.shape[0], -1)
        n = x.shape[0]
        k = self.num_components
        if n < k:
            raise ValueError(
                f"GaussianMixture.fit needs at least num_components={k} "
                f"examples; received {n}."
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("GaussianMixture.fit received non-finite inputs.")
        rng = np.random.default_rng(self.seed)
        reg = float(reg_covar) * max(float(np.mean(np.var(x, axis=0))), 1e-12)

        # k-means++ seeding, then Lloyd steps.
        centres = _kmeans_plus_plus(x, k, rng)
        for _ in range(int(kmeans_iterations)):
            labels = np.argmin(_sq_distances(x, centres), axis=1)
            for j in range(k):
                members = x[labels == j]
                if len(members):
                    centres[j] = members.mean(axis=0)
        labels = np.argmin(_sq_distances(x, centres), axis=1)
        resp = np.zeros((n, k))
        resp[np.arange(n), labels] = 1.0

        x2 = x * x
        spherical = self.covariance == "spherical"
        means, variances, log_weights = _m_step(x, x2, resp, reg, spherical)
        prev, ll, converged = -np.inf, -np.inf, False
        for it in range(int(iterations)):
            log_prob = _log_prob(x, x2, means, variances, log_weights)
            top = log_prob.max(axis=1, keepdims=True)
            log_norm = top + np.log(
                np.exp(log_prob - top).sum(axis=1, keepdims=True)
            )
            resp = np.exp(log_prob - log_norm)
            ll = float(log_norm.mean())
            if verbose:
                print(
                    f"GaussianMixture EM iteration {it + 1}: "
                    f"mean log-likelihood {ll:.4f}"
                )
            means, variances, log_weights = _m_step(
                x, x2, resp, reg, spherical
            )
            if abs(ll - prev) < tol:
                converged = True
                break
            prev = ll
        self.feature_shape = tuple(int(s) for s in feature_shape)
        self._set_parameters(means, np.sqrt(variances), np.exp(log_weights))
        self.log_likelihood_ = ll
        self.converged_ = converged
        return self

    @property
    def means(self):
        """Fitted component means `[K, D]` as numpy, or None."""
        if self._means is None:
            return None
        return ops.convert_to_numpy(self._means)

    @property
    def scales(self):
        """Fitted component standard deviations `[K, D]` as numpy, or None."""
        return (
            None if self._scales is None else ops.convert_to_numpy(self._scales)
        )

    @property
    def mixture_weights(self):
        """Fitted component weights `[K]` as numpy, or None."""
        if self._logits is None:
            return None
        logits = ops.convert_to_numpy(self._logits).astype("float64")
        w = np.exp(logits - logits.max())
        return w / w.sum()

    def validate(self, input_shape):
        super().validate(input_shape)
        input_shape = tuple(input_shape)
        if self.fitted and None not in input_shape:
            size = int(np.prod(input_shape))
            if size != self.num_features:
                raise ValueError(
                    f"GaussianMixture was fitted to inputs with "
                    f"{self.num_features} features (shape "
                    f"{self.feature_shape}); got input shape {input_shape}."
                )

    def sample(self, x, num_samples, seed):
        if not self.fitted:
            raise ValueError(
                "GaussianMixture is not fitted: call `fit(data)` on training "
                "inputs (or build it from a fitted config) before sampling."
            )
        tfd = tfp_backend.distributions()
        mixture = tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=self._logits),
            components_distribution=tfd.MultivariateNormalDiag(
                loc=self._means, scale_diag=self._scales
            ),
        )
        flat = mixture.sample([num_samples], seed=seed)
        return ops.reshape(flat, (-1,) + tuple(ops.shape(x)[1:]))

    def get_config(self):
        config = super().get_config()
        fitted = self.fitted
        config.update(
            {
                "num_components": self.num_components,
                "covariance": self.covariance,
                "means": self.means.tolist() if fitted else None,
                "scales": self.scales.tolist() if fitted else None,
                "mixture_weights": (
                    self.mixture_weights.tolist() if fitted else None
                ),
                "feature_shape": (
                    None
                    if self.feature_shape is None
                    else list(self.feature_shape)
                ),
            }
        )
        return config
