"""CRD: contrastive representation distillation (Tian et al., ICLR 2020).

Both penultimate features are embedded by linear heads to `embedding_dim`
(128) and l2-normalised. Each example `i` of the training set has two rows in
a memory bank: `M_s[i]` (student embeddings) and `M_t[i]` (teacher
embeddings), each a momentum average of the example's past embeddings. With
`K` negatives `j_1..j_K` drawn uniformly from the `N` training examples,

    P_t(i, j) = exp(e_t(i) . M_s[j] / tau) / Z_t     (teacher anchor)
    P_s(i, j) = exp(e_s(i) . M_t[j] / tau) / Z_s     (student anchor)

and the NCE loss of one anchor, with the noise term `K / N`, is

    L(P) = -log(P(i, i) / (P(i, i) + K/N + eps))
           - sum_k log((K/N) / (P(i, j_k) + K/N + eps)),

CRD = L(P_t) + L(P_s) per example. `Z_t`, `Z_s` are constants, set once on the
first training batch to `N * mean(exp(scores / tau))` (over the batch and its
`K + 1` columns). After the loss, the bank rows of the batch become
`normalize(m * M[i] + (1 - m) * e(i))` (momentum `m` = 0.5).

Conventions taken from the official code (github.com/HobbitLong/RepDistiller,
`crd/criterion.py`, `crd/memory.py`): both directions summed; the positive is
the bank's row of the example itself (its embedding from earlier steps, not
the current one); the constant-Z normalisation; `eps = 1e-7`; bank rows
initialised uniformly in `+-1 / sqrt(embedding_dim / 3)`; the loss is computed
from the bank as it was before this batch's update. Differences: negatives are
drawn uniformly from all `N` examples (the official memory's own sampler), not
from the examples of other classes only (the official CIFAR-100 data loader's
`mode="exact"`), so a negative may share the anchor's class (or, with
probability `K/N`, be the anchor itself); the embedding heads use Keras's
default initialisers.
"""
import keras
import numpy as np
from keras import ops

from kdtf import distribute
from kdtf.losses import feature_checks as checks
from kdtf.losses.base import DistillationLoss

_EPS = 1e-7


def nce_loss(probabilities, num_examples, eps=_EPS):
    """The NCE loss of each anchor, from its normalised scores.

    Args:
        probabilities: `[B, K + 1]` scores `exp(s / tau) / Z`, the positive
            in column 0 and the `K` negatives after it.
        num_examples: `N`, the size of the training set (the noise
            distribution is uniform over it).
        eps: added to each denominator (the official code's 1e-7).

    Returns:
        `[B]` losses `-log D(positive) - sum log(1 - D(negative_k))`.
    """
    num_negatives = probabilities.shape[1] - 1
    noise = float(num_negatives) / float(num_examples)
    positive = probabilities[:, 0]
    negatives = probabilities[:, 1:]
    log_d1 = ops.log(positive / (positive + noise + eps))
    log_d0 = ops.log(noise / (negatives + noise + eps))
    return -(log_d1 + ops.sum(log_d0, axis=1))


def _l2_normalize(x):
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))


def _replica_offset(local_batch):
    """Row offset of this replica's batch in the global batch (0 off a strategy)."""
    tf = distribute._tf()
    ctx = tf.distribute.get_replica_context() if tf is not None else None
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return 0
    sizes = ctx.all_gather(ops.reshape(ops.cast(local_batch, "int32"), (1,)), axis=0)
    before = ops.arange(ctx.num_replicas_in_sync) < ctx.replica_id_in_sync_group
    return ops.sum(ops.where(before, sizes, 0))


def _global_mean(x):
    """Mean of `x` over the global batch (every replica's rows)."""
    local = ops.stack([ops.sum(x), ops.cast(ops.size(x), x.dtype)])
    gathered = distribute.all_gather(ops.reshape(local, (1, 2)))
    return ops.sum(gathered[:, 0]) / ops.sum(gathered[:, 1])


@keras.saving.register_keras_serializable(package="kdtf")
class ContrastMemory(keras.layers.Layer):
    """CRD's memory bank: one student and one teacher embedding per example.

    A layer without trainable weights, owned by `ContrastHead`; its state is
    `student_bank`, `teacher_bank` (`[num_examples, embedding_dim]`), the two
    normalisation constants `z` (`[2]`: student anchor, teacher anchor; -1
    until set) and the seed of the negative sampler, all saved with the
    `kdtf.Distiller` (and restored by `BackupAndRestore`).

    Args:
        num_examples: `N`, the number of bank rows.
        embedding_dim: width of the rows.
        seed: seed of the initial rows and of the negative sampler.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, num_examples, embedding_dim, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_examples = int(num_examples)
        self.embedding_dim = int(embedding_dim)
        self.seed = seed
        stdv = 1.0 / np.sqrt(self.embedding_dim / 3.0)
        shape = (self.num_examples, self.embedding_dim)
        for name, offset in (("student_bank", 0), ("teacher_bank", 1)):
            init = keras.initializers.RandomUniform(
                -stdv, stdv, seed=None if seed is None else seed + offset)
            setattr(self, name, self.add_weight(
                shape=shape, initializer=init, trainable=False, name=name, dtype="float32"))
        self.z = self.add_weight(shape=(2,), initializer=keras.initializers.Constant(-1.0),
                                 trainable=False, name="z", dtype="float32")
        self.seed_generator = keras.random.SeedGenerator(seed, name="negatives_seed")
        self.built = True

    def call(self, inputs):
        return inputs

    # Keras saves a layer's variables but not its SeedGenerator's state: the
    # sampler's position is saved beside the banks, so a resumed run draws
    # the negatives an uninterrupted one would.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["sampler_state"] = self.seed_generator.state

    def load_own_variables(self, store):
        own = self._trainable_variables + self._non_trainable_variables
        names = [k for k in store.keys() if k != "sampler_state"]
        if len(names) != len(own):
            raise ValueError(
                f"ContrastMemory {self.name!r}: the file holds {len(names)} variables, the "
                f"layer has {len(own)}."
            )
        for i, variable in enumerate(own):
            variable.assign(store[str(i)])
        if "sampler_state" in store.keys():
            self.seed_generator.state.assign(store["sampler_state"])

    def get_config(self):
        return {**super().get_config(), "num_examples": self.num_examples,
                "embedding_dim": self.embedding_dim, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kdtf")
class ContrastHead(keras.layers.Layer):
    """CRD's trainable embedding heads and its memory bank (`ContrastMemory`).

    Built by `CRD.build_adapter`; trained by the Distiller's optimizer and
    saved with the Distiller, never part of the student.

    Args:
        teacher_shape: shape of one teacher feature (no batch dimension).
        student_shape: shape of one student feature.
        num_examples: `N`, the size of the training set.
        embedding_dim: width of the embeddings.
        num_negatives: `K`, negatives per anchor.
        temperature: `tau`.
        momentum: `m` of the bank update.
        seed: seed of the heads, the bank and the negatives.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, teacher_shape, student_shape, num_examples, embedding_dim=128,
                 num_negatives=16384, temperature=0.07, momentum=0.5, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.teacher_shape = tuple(int(d) for d in teacher_shape)
        self.student_shape = tuple(int(d) for d in student_shape)
        self.num_examples = int(num_examples)
        self.embedding_dim = int(embedding_dim)
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.seed = seed

        def dense(name, offset):
            init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset)
            return keras.layers.Dense(self.embedding_dim, kernel_initializer=init,
                                      dtype=self.dtype_policy, name=name)

        self.embed_teacher = dense("embed_teacher", 2)
        self.embed_student = dense("embed_student", 3)
        self.embed_teacher.build((None, int(np.prod(self.teacher_shape))))
        self.embed_student.build((None, int(np.prod(self.student_shape))))
        self.memory = ContrastMemory(self.num_examples, self.embedding_dim, seed=seed,
                                     name="memory")
        self.built = True

    def embed(self, teacher_features, student_features):
        """The l2-normalised embeddings `(e_t, e_s)`, `[B, embedding_dim]` each."""
        t = ops.cast(teacher_features, "float32")
        s = ops.cast(student_features, "float32")
        t = ops.reshape(t, (-1, int(np.prod(self.teacher_shape))))
        s = ops.reshape(s, (-1, int(np.prod(self.student_shape))))
        return (_l2_normalize(self.embed_teacher(t)), _l2_normalize(self.embed_student(s)))

    def sample_negatives(self, global_batch, training=True):
        """`[global_batch, K]` negative indices, uniform over `[0, N)`.

        In training the bank's seed generator advances (every replica draws
        the same global matrix and keeps its own rows); otherwise the draw is
        a fixed one (from `seed`), so evaluation leaves training's stream as
        it was.
        """
        seed = self.memory.seed_generator if training else (self.seed or 0)
        return keras.random.randint((global_batch, self.num_negatives), 0, self.num_examples,
                                    seed=seed, dtype="int32")

    def contrast(self, teacher_features, student_features, index, negatives, training=True):
        """Per-example CRD loss for given negatives; updates the bank in training.

        Args:
            teacher_features: `[B] + teacher_shape`.
            student_features: `[B] + student_shape`.
            index: `[B]` int positions of the examples in the training set.
            negatives: `[B, K]` int negative indices.
            training: set `Z` on the first call and update the bank rows of
                the global batch (all replicas) after computing the loss.

        Returns:
            `[B]` losses `L(P_t) + L(P_s)`.
        """
        e_t, e_s = self.embed(teacher_features, student_features)
        index = ops.cast(ops.reshape(index, (-1,)), "int32")
        columns = ops.concatenate([index[:, None], ops.cast(negatives, "int32")], axis=1)
        memory = self.memory
        rows_s = ops.stop_gradient(ops.take(memory.student_bank, columns, axis=0))
        rows_t = ops.stop_gradient(ops.take(memory.teacher_bank, columns, axis=0))
        tau = self.temperature
        # Teacher anchor against the student bank, student anchor against the teacher bank.
        # Batched mat-vec products ([B, K+1, D] x [B, D, 1]): no [B, K+1, D] product tensor.
        out_t = ops.exp(ops.squeeze(ops.matmul(rows_s, e_t[:, :, None]), -1) / tau)
        out_s = ops.exp(ops.squeeze(ops.matmul(rows_t, e_s[:, :, None]), -1) / tau)
        z = ops.convert_to_tensor(memory.z)
        first = ops.stack([_global_mean(ops.stop_gradient(out_s)),
                           _global_mean(ops.stop_gradient(out_t))]) * float(self.num_examples)
        z = ops.where(z < 0, first, z)
        loss = (nce_loss(out_t / z[1], self.num_examples)
                + nce_loss(out_s / z[0], self.num_examples))
        if training:
            memory.z.assign(z)
            # Every replica applies the global batch's update to its copy.
            all_index = distribute.all_gather(index)
            self._update(memory.student_bank, all_index,
                         distribute.all_gather(ops.stop_gradient(e_s)))
            self._update(memory.teacher_bank, all_index,
                         distribute.all_gather(ops.stop_gradient(e_t)))
        return loss

    def _update(self, bank, index, embeddings):
        m = self.momentum
        rows = m * ops.take(bank, index, axis=0) + (1.0 - m) * embeddings
        bank.assign(ops.scatter_update(bank.value, index[:, None], _l2_normalize(rows)))

    def call(self, teacher_features, student_features, index, training=None):
        local = ops.shape(index)[0]
        offset = _replica_offset(local)
        if isinstance(offset, int):  # one replica: draw this batch's rows only
            negatives = self.sample_negatives(local, training=bool(training))
        else:
            total = ops.sum(distribute.all_gather(ops.reshape(ops.cast(local, "int32"), (1,))))
            negatives = self.sample_negatives(total, training=bool(training))
            negatives = ops.slice(negatives, (offset, 0), (local, self.num_negatives))
        return self.contrast(teacher_features, student_features, index, negatives,
                             training=bool(training))

    def get_config(self):
        return {**super().get_config(), "teacher_shape": self.teacher_shape,
                "student_shape": self.student_shape, "num_examples": self.num_examples,
                "embedding_dim": self.embedding_dim, "num_negatives": self.num_negatives,
                "temperature": self.temperature, "momentum": self.momentum, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kdtf")
class CRD(DistillationLoss):
    """Contrastive representation distillation (Tian et al., ICLR 2020).

    `CRD = L(P_t) + L(P_s)` per example: NCE of the teacher's embedding
    against a memory bank of student embeddings and of the student's against
    a bank of teacher embeddings, with `num_negatives` negatives each (see
    the module docstring for the formula and how it follows the official
    code). The embeddings are linear heads on the features of the layers
    `teacher_layer_name` / `student_layer_name` (the penultimate features,
    e.g. the global-pooling outputs), flattened, mapped to `embedding_dim`
    and l2-normalised.

    CRD needs each example's position in the training set (`needs =
    ("index", "training")`): give the `kdtf.Distiller` batches
    `x = {"inputs": inputs, "index": index}`, with the index attached before
    any shuffling, e.g. `fit({"inputs": x, "index": np.arange(len(x))}, y,
    shuffle=True)` or `tf.data.Dataset.from_tensor_slices(({"inputs": x,
    "index": np.arange(len(x))}, y)).shuffle(len(x)).batch(64)`. Rows
    without an index (synthetic inputs, evaluation batches without it) get
    a loss of 0; evaluation with an index reports the loss against the bank
    without changing it.

    The Distiller calls `build_adapter(teacher_shape, student_shape)` once;
    the `ContrastHead` it returns (`loss.adapter`: both embedding heads and
    the `ContrastMemory` bank) is trained by the Distiller's optimizer and
    saved with the Distiller in `.keras` files and backups, never with the
    student. The bank holds `2 * num_examples * embedding_dim` floats; each
    step gathers `2 * B * (num_negatives + 1) * embedding_dim`.

    Under `tf.distribute` every replica draws the same global matrix of
    negatives (from the bank's seed) and keeps its own rows, sets `Z` from
    the global batch, and applies the global batch's bank update (gathered
    indices and embeddings), so the run matches one device.

    Args:
        teacher_layer_name: the teacher layer with the penultimate features.
        student_layer_name: the student layer with the penultimate features.
        num_examples: `N`, the number of training examples (the indices are
            in `[0, N)`).
        embedding_dim: width of the embeddings. Defaults to 128.
        num_negatives: `K`, negatives per anchor. Defaults to 16384.
        temperature: `tau` of the scores. Defaults to 0.07.
        momentum: `m` of the bank update. Defaults to 0.5.
        seed: seed of the heads' and the bank's initial values and of the
            negatives; None draws them from Keras's global seed.
        name: name of the loss. Defaults to `"crd"`.
        reduction: `keras.losses.Loss` reduction over the per-example values.

    Call arguments:
        teacher_outputs: teacher features `[B] + teacher_shape`.
        student_outputs: student features `[B] + student_shape`.
        sample_weight: optional per-example weights.
        index: `[B]` int positions of the examples in the training set, or
            None (the loss is then 0).
        training: in training the bank's `Z` is set on the first call and
            the batch's bank rows are updated after the loss.

    Returns:
        The reduced loss (`[B]` with `reduction=None`).

    Example:

    >>> loss = CRD("pool", "pool", num_examples=50000)
    >>> distiller = kdtf.Distiller(teacher, student, loss, [0.8])
    >>> distiller.fit({"inputs": x, "index": np.arange(len(x))}, y, batch_size=64)
    """

    same_shape = False
    needs = ("index", "training")

    def __init__(self, teacher_layer_name, student_layer_name, num_examples, embedding_dim=128,
                 num_negatives=16384, temperature=0.07, momentum=0.5, seed=None, name="crd",
                 reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        teacher_layer_name = checks.check_layer_name("teacher_layer_name", teacher_layer_name)
        student_layer_name = checks.check_layer_name("student_layer_name", student_layer_name)
        for arg, value in (("num_examples", num_examples), ("embedding_dim", embedding_dim),
                           ("num_negatives", num_negatives)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{arg}` must be an int >= 1; got {arg}={value!r}.")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not temperature > 0:
            raise ValueError(f"`temperature` must be a number > 0; got temperature={temperature!r}.")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
                or not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be a number in [0, 1); got momentum={momentum!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None; got seed={seed!r}.")
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.num_examples = int(num_examples)
        self.embedding_dim = int(embedding_dim)
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.seed = seed
        self.adapter = None

    def build_adapter(self, teacher_shape, student_shape):
        """Creates the `ContrastHead` for per-example feature shapes (no batch dim).

        Args:
            teacher_shape: shape of one teacher feature.
            student_shape: shape of one student feature.

        Returns:
            The `ContrastHead` (also `self.adapter`).

        Raises:
            ValueError: a shape is empty or has unknown sizes.
        """
        for arg, shape in (("teacher_shape", teacher_shape), ("student_shape", student_shape)):
            shape = tuple(shape)
            if not shape or any(d is None or int(d) < 1 for d in shape):
                raise ValueError(
                    f"{type(self).__name__}: `{arg}` must be the known, non-empty shape of one "
                    f"feature (no batch dimension); got {arg}={shape!r}."
                )
        self.adapter = ContrastHead(
            teacher_shape, student_shape, self.num_examples, embedding_dim=self.embedding_dim,
            num_negatives=self.num_negatives, temperature=self.temperature,
            momentum=self.momentum, seed=self.seed, name=f"{self.name}_head")
        return self.adapter

    def call(self, teacher_outputs, student_outputs, index=None, training=None):
        if self.adapter is None:
            raise ValueError(
                f"{type(self).__name__}: call build_adapter(teacher_shape, student_shape) first "
                "(the kdtf.Distiller does this in its constructor)."
            )
        head = self.adapter
        for arg, x, want in (("teacher_outputs", teacher_outputs, head.teacher_shape),
                             ("student_outputs", student_outputs, head.student_shape)):
            got = tuple(x.shape[1:])
            if len(got) != len(want) or any(g is not None and g != w for g, w in zip(got, want)):
                raise ValueError(
                    f"{type(self).__name__}: `{arg}` must have shape [batch] + {list(want)} "
                    f"(the shape given to build_adapter); got {tuple(x.shape)}."
                )
        if index is None:
            return ops.zeros((ops.shape(teacher_outputs)[0],), "float32")
        index = ops.convert_to_tensor(index)
        if len(index.shape) != 1:
            raise ValueError(
                f"{type(self).__name__}: `index` must be a [batch] vector of ints; got shape "
                f"{tuple(index.shape)}."
            )
        return head(teacher_outputs, student_outputs, index, training=bool(training))

    def get_config(self):
        return {**super().get_config(), "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name, "num_examples": self.num_examples,
                "embedding_dim": self.embedding_dim, "num_negatives": self.num_negatives,
                "temperature": self.temperature, "momentum": self.momentum, "seed": self.seed}
