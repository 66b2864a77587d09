"""Gaussian-mixture sampler fitted to the training inputs."""

import math

import keras
import numpy as np
from keras import ops

from kdtf.backend import tfp as tfp_backend
from kdtf.samplers.base import Sampler

_COVARIANCES = ("diag", "spherical", "full")


def _collect_inputs(
    data, max_samples, caller="GaussianMixture.fit", arg="data",
    dtype="float64",
):
    """Returns up to `max_samples` inputs of `data` as a numpy array.

    Args:
        data: numpy array / tensor `[N, ...]`, an `(x, y)` tuple of arrays,
            or a batched `tf.data.Dataset` of `x` or `(x, y)`.
        max_samples: int, or None for all inputs.
        caller: name of the calling method, used in error messages.
        arg: name of the caller's data argument, used in error messages.
        dtype: numpy dtype of the returned array.

    Returns:
        A numpy array `[min(N, max_samples), ...]` of `dtype`.
    """
    if isinstance(data, (tuple, list)) and data and not np.isscalar(data[0]):
        data = data[0]  # (x, y) pair of arrays.
    if hasattr(data, "element_spec") and hasattr(data, "as_numpy_iterator"):
        # A tf.data.Dataset, assumed batched like for `Model.fit`.
        batches, count = [], 0
        for element in data.as_numpy_iterator():
            if isinstance(element, dict):
                raise TypeError(
                    f"{caller} needs a dataset of `x` or `(x, y)` with a "
                    "single input tensor; received a dict element."
                )
            x = element[0] if isinstance(element, tuple) else element
            x = np.asarray(x)
            batches.append(x)
            count += x.shape[0]
            if max_samples is not None and count >= max_samples:
                break
        if not batches:
            raise ValueError(f"{caller} received an empty dataset.")
        array = np.concatenate(batches, axis=0)
    else:
        try:
            array = np.asarray(data)
        except Exception as e:  # noqa: BLE001
            raise TypeError(
                f"`{arg}` must be a numpy array, a tensor, or a "
                "tf.data.Dataset of `x` or `(x, y)`; received "
                f"{type(data).__name__}."
            ) from e
        if array.dtype == object:
            raise TypeError(
                f"`{arg}` must be a numpy array, a tensor, or a "
                "tf.data.Dataset of `x` or `(x, y)`; received "
                f"{type(data).__name__}."
            )
    if array.ndim < 2:
        raise ValueError(
            f"`{arg}` must have a batch dimension and at least one feature "
            f"dimension; received shape {array.shape}."
        )
    return array[:max_samples].astype(dtype)


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


def _log_prob_full(x, means, scale_tril, log_weights):
    """Per-component log joint `[N, K]` of a full-covariance mixture.

    `scale_tril` `[K, D, D]` holds the Cholesky factors `L` of the
    covariances (`Sigma = L L^T`); the Mahalanobis term is `|L^-1 (x - mu)|^2`
    and `log det Sigma = 2 sum(log diag L)`.
    """
    n, d = x.shape
    out = np.empty((n, means.shape[0]))
    eye = np.eye(d)
    for j, (mean, chol) in enumerate(zip(means, scale_tril)):
        inv_chol = np.linalg.solve(chol, eye)  # L^-1 (lower triangular).
        z = (x - mean) @ inv_chol.T
        log_det = 2.0 * np.sum(np.log(np.diag(chol)))
        out[:, j] = -0.5 * (
            d * math.log(2 * math.pi) + log_det + np.sum(z * z, axis=1)
        )
    return out + log_weights[None, :]


def _m_step_full(x, resp, reg):
    """Weighted means, Cholesky factors of covariances, and log-weights."""
    nk = resp.sum(axis=0) + 10 * np.finfo("float64").eps
    log_weights = np.log(nk / x.shape[0])
    means = (resp.T @ x) / nk[:, None]
    d = x.shape[1]
    scale_tril = np.empty((means.shape[0], d, d))
    for j in range(means.shape[0]):
        diff = x - means[j]
        cov = (resp[:, j, None] * diff).T @ diff / nk[j]
        cov = 0.5 * (cov + cov.T)
        cov[np.diag_indices(d)] += reg
        try:
            scale_tril[j] = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError as e:
            raise ValueError(
                f"GaussianMixture.fit: the covariance of component {j} is "
                "not positive definite; increase `reg_covar` (or use "
                'covariance="diag").'
            ) from e
    return means, scale_tril, log_weights


@keras.saving.register_keras_serializable(package="kdtf")
class GaussianMixture(Sampler):
    """Samples from a Gaussian mixture fitted to the training inputs.

    Inputs are flattened to `D` features. `fit()` runs k-means++ seeding,
    a few k-means (Lloyd) steps and then EM in numpy (float64) for a mixture
    of `num_components` Gaussians with diagonal, spherical or full
    covariance. The fitted `means` `[K, D]`, `mixture_weights` `[K]` and
    either `scales` `[K, D]` (standard deviations; "diag" and "spherical")
    or `scale_tril` `[K, D, D]` (lower-triangular Cholesky factors `L` of
    the covariances `L L^T`; "full") are kept as non-trainable variables and
    in the config (as nested lists), so a fitted mixture round-trips through
    `get_config()`/`from_config()` and `.keras` files.

    Sampling draws from `tfd.MixtureSameFamily(tfd.Categorical,
    tfd.MultivariateNormalDiag)` ("diag", "spherical") or
    `tfd.MixtureSameFamily(tfd.Categorical, tfd.MultivariateNormalTriL)`
    ("full") and reshapes to the per-example shape of `x_real` (whose values
    are otherwise unused). XLA (`jit_compile=True`): supported.

    "full" captures correlations between features (e.g. neighbouring
    pixels) that "diag" cannot, but costs `O(N K D^2)` per EM iteration and
    `K D^2` parameters (also in the config): use it for low or moderate `D`
    (tabular features, embeddings, small images), not e.g. 32x32x3 images.

    Fit before tracing a train step that samples from the mixture: a
    traced function keeps the variables it captured, and refitting to
    another input size creates new ones.

    Args:
        num_components: int >= 1, number of mixture components K.
        covariance: one of "diag" (per-feature variance per component),
            "spherical" (one variance per component) or "full" (a full
            covariance matrix per component).
        means, scales, mixture_weights: fitted parameters (normally set by
            `fit()` or by `from_config()`), nested lists / arrays. `scales`
            is for "diag"/"spherical" only.
        feature_shape: per-example shape of the fitted data (informational).
        seed: int or None, seed of the sampler's own `SeedGenerator`; also
            seeds the k-means++ initialisation in `fit()`.
        scale_tril: fitted Cholesky factors `[K, D, D]` (lower triangular,
            positive diagonal) for "full", given instead of `scales`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> gmm = GaussianMixture(num_components=10, seed=0).fit(x_train)
    >>> x_syn = gmm(x_batch, seed=1)
    >>> full = GaussianMixture(2, covariance="full", seed=0).fit(x_tabular)
    >>> full.covariances.shape  # [K, D, D]
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
        scale_tril=None,
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
        if not isinstance(covariance, str) or covariance not in _COVARIANCES:
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
        self._scale_tril = None
        self._logits = None
        full = covariance == "full"
        if full and scales is not None:
            raise ValueError(
                'covariance="full" takes `scale_tril` (Cholesky factors '
                "[K, D, D]), not `scales`."
            )
        if not full and scale_tril is not None:
            raise ValueError(
                "`scale_tril` is only for covariance=\"full\"; received "
                f"covariance={covariance!r} (use `scales`)."
            )
        scale = scale_tril if full else scales
        scale_name = "scale_tril" if full else "scales"
        given = [p is not None for p in (means, scale, mixture_weights)]
        if any(given) and not all(given):
            raise ValueError(
                f"`means`, `{scale_name}` and `mixture_weights` must be given "
                "together (or none of them)."
            )
        if all(given):
            self._set_parameters(
                np.asarray(means, "float64"),
                np.asarray(scale, "float64"),
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

    @property
    def _scale_attr(self):
        return "_scale_tril" if self.covariance == "full" else "_scales"

    def _check_scale(self, means, scale):
        if self.covariance != "full":
            if scale.shape != means.shape:
                raise ValueError(
                    f"`scales` must have the shape of `means` {means.shape}; "
                    f"received shape {scale.shape}."
                )
            if np.any(scale <= 0):
                raise ValueError("`scales` must be > 0.")
            return
        k, d = means.shape
        if scale.shape != (k, d, d):
            raise ValueError(
                f"`scale_tril` must have shape [num_components, D, D] = "
                f"{(k, d, d)}; received shape {scale.shape}."
            )
        if np.any(np.triu(scale, k=1) != 0):
            raise ValueError(
                "`scale_tril` must be lower triangular (Cholesky factors of "
                "the covariances)."
            )
        if not np.all(np.diagonal(scale, axis1=1, axis2=2) > 0):
            raise ValueError("`scale_tril` must have a positive diagonal.")

    def _set_parameters(self, means, scale, weights):
        k = self.num_components
        if means.ndim != 2 or means.shape[0] != k:
            raise ValueError(
                f"`means` must have shape [num_components={k}, D]; received "
                f"shape {means.shape}."
            )
        self._check_scale(means, scale)
        if weights.shape != (k,):
            raise ValueError(
                f"`mixture_weights` must have shape ({k},); received shape "
                f"{weights.shape}."
            )
        if np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(
                "`mixture_weights` must be >= 0 with a positive sum."
            )
        weights = weights / weights.sum()
        with np.errstate(divide="ignore"):
            logits = np.log(weights)
        logits = np.maximum(logits, -1e30)
        scale_attr = self._scale_attr
        values = {"_means": means, scale_attr: scale, "_logits": logits}
        if self._means is not None and self._means.shape != means.shape:
            # Refit on data of another size: replace the variables.
            for attr in values:
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
                for attr, value in values.items():
                    var = self.add_weight(
                        shape=value.shape,
                        initializer="zeros",
                        dtype="float32",
                        trainable=False,
                        name=attr[1:],
                    )
                    setattr(self, attr, var)
            finally:
                if was_locked:
                    self._tracker.lock()
        for attr, value in values.items():
            getattr(self, attr).assign(value.astype("float32"))

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
            reg_covar: float, added to every variance (the diagonal of every
                covariance matrix for "full"), relative to the mean feature
                variance of the data (keeps constant features, such as blank
                image borders, from collapsing to zero variance, and full
                covariances positive definite).
            max_samples: int, at most this many inputs are used.
            verbose: bool, print the log-likelihood per EM iteration.

        Returns:
            `self`, fitted. `self.log_likelihood_` holds the final mean
            log-likelihood per example, `self.converged_` whether EM met
            `tol`.

        Raises:
            ValueError: with fewer than `num_components` or non-finite
                inputs, or (for "full") when a covariance is not positive
                definite even after `reg_covar` is added.

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

        if self.covariance == "full":

            def m_step(resp):
                return _m_step_full(x, resp, reg)

            def log_prob_fn(means, scale, log_weights):
                return _log_prob_full(x, means, scale, log_weights)

        else:
            x2 = x * x
            spherical = self.covariance == "spherical"

            def m_step(resp):
                return _m_step(x, x2, resp, reg, spherical)

            def log_prob_fn(means, scale, log_weights):
                return _log_prob(x, x2, means, scale, log_weights)

        # `scale` is the variances [K, D] ("diag", "spherical") or the
        # Cholesky factors [K, D, D] ("full").
        means, scale, log_weights = m_step(resp)
        prev, ll, converged = -np.inf, -np.inf, False
        for it in range(int(iterations)):
            log_prob = log_prob_fn(means, scale, log_weights)
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
            means, scale, log_weights = m_step(resp)
            if abs(ll - prev) < tol:
                converged = True
                break
            prev = ll
        if self.covariance != "full":
            scale = np.sqrt(scale)
        self.feature_shape = tuple(int(s) for s in feature_shape)
        self._set_parameters(means, scale, np.exp(log_weights))
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
        """Fitted per-feature standard deviations `[K, D]` as numpy, or None.

        For "full", the marginal standard deviations `sqrt(diag(Sigma_k))`.
        """
        if not self.fitted:
            return None
        if self.covariance == "full":
            return np.sqrt(
                np.diagonal(self.covariances, axis1=1, axis2=2)
            ).astype("float32")
        return ops.convert_to_numpy(self._scales)

    @property
    def scale_tril(self):
        """Fitted Cholesky factors `[K, D, D]` ("full" only) or None."""
        if self._scale_tril is None:
            return None
        return ops.convert_to_numpy(self._scale_tril)

    @property
    def covariances(self):
        """Fitted covariance matrices `[K, D, D]` (float64 numpy), or None.

        `L L^T` for "full"; diagonal matrices for "diag" and "spherical".
        """
        if not self.fitted:
            return None
        if self.covariance == "full":
            chol = self.scale_tril.astype("float64")
            return chol @ np.swapaxes(chol, 1, 2)
        variances = self.scales.astype("float64") ** 2
        return variances[:, :, None] * np.eye(variances.shape[1])

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
        if self.covariance == "full":
            components = tfd.MultivariateNormalTriL(
                loc=self._means, scale_tril=self._scale_tril
            )
        else:
            components = tfd.MultivariateNormalDiag(
                loc=self._means, scale_diag=self._scales
            )
        mixture = tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=self._logits),
            components_distribution=components,
        )
        flat = mixture.sample([num_samples], seed=seed)
        return ops.reshape(flat, (-1,) + tuple(ops.shape(x)[1:]))

    def get_config(self):
        config = super().get_config()
        fitted = self.fitted
        full = self.covariance == "full"
        config.update(
            {
                "num_components": self.num_components,
                "covariance": self.covariance,
                "means": self.means.tolist() if fitted else None,
                "scales": (
                    self.scales.tolist() if fitted and not full else None
                ),
                "scale_tril": (
                    self.scale_tril.tolist() if fitted and full else None
                ),
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
