"""The `Distiller`: a `keras.Model` that trains a student from a teacher."""
import sys

import keras
from keras import ops

from kdtf import batches
from kdtf import losses as losses_lib
from kdtf.backend import get_step_functions
from kdtf import heads
from kdtf.losses.base import shapes_compatible
from kdtf.losses.keras_compat import KerasDistillationLoss, is_keras_distillation_loss


@keras.saving.register_keras_serializable(package="kdtf")
class Distiller(keras.Model):
    """Trains a student to match a frozen teacher, with `compile`/`fit`.

    A drop-in for `keras.distillation.Distiller` (same argument names and loss
    weighting), with correct logit losses computed in float32, synthetic
    ("extracurricular") inputs, and a train step that runs the teacher once,
    in inference mode and outside the gradient tape, and the student once.

    The objective for a batch `(x, y)` with synthetic inputs `x~` is

        w * task(y, S(x)) + (1 - w) * (sum_i w_i * D_i(T(x), S(x))
                                        + w_syn * sum_i w_i * D_i(T(x~), S(x~)))

    with `w = student_loss_weight`, `w_i = distillation_loss_weights[i]`,
    `w_syn = synthetic_loss_weight`, `task` the loss given to `compile()` and
    `D_i` the distillation losses, called as `D_i(teacher_out, student_out)`.
    Synthetic inputs carry no labels: only the distillation terms see them.

    Cached teacher outputs (`kdtf.caching.TeacherCache`): a batch may carry
    the teacher's outputs on its real inputs, computed once ahead of training,
    as `x = {"inputs": inputs, "teacher_outputs": outputs}`, i.e. batches
    `({"inputs": x, "teacher_outputs": t}, y)` (or `(..., y, sample_weight)`,
    or the dict alone without labels). `t` has shape `[B] + teacher output
    shape` (any float dtype; it is cast to float32) and row `i` is the
    teacher's output on `x[i]`. The teacher is then not run on the real
    inputs; synthetic inputs from `sampler` still go through it online.
    Cached outputs hold the teacher's final output only, so they cannot feed
    feature losses (`FeatureMSE`); a cache built for a teacher with another
    output shape is an error. The train and test steps of every backend get
    this through `unpack_inputs` and `teacher_outputs`.

    Example indices: a loss that keeps per-example state across steps (CRD's
    memory bank, `kdtf.losses.CRD`) declares `"index"` in its `needs`, and
    each batch then carries the examples' positions in the training set as
    `x = {"inputs": inputs, "index": index}` (int, shape `[B]`, in
    `[0, num_examples)`; `kdtf.caching.TeacherCache` batches carry no index, so
    such a loss cannot train from cached teacher outputs).
    Attach the index before shuffling: `fit({"inputs": x, "index":
    np.arange(len(x))}, y, shuffle=True)`, or
    `tf.data.Dataset.from_tensor_slices(({"inputs": x, "index": range(n)}, y))
    .shuffle(n).batch(b)`. Such a loss gets the index of the real rows in
    train and test steps (None on synthetic rows and on batches without it);
    a train step without it is an error.

    `fit()` logs `loss` (the total), `student_loss`, `distillation_loss` and,
    with a sampler, `synthetic_loss`, followed by the compiled metrics of the
    student on the real inputs. `evaluate()` reports the student: its task
    loss as `loss`, its compiled metrics, and `distillation_loss` to the
    teacher.

    Args:
        teacher: a trained `keras.Model`. It is frozen (`trainable = False`),
            always called with `training=False`, and never updated: its weights
            and BatchNorm statistics stay bit-identical.
        student: the `keras.Model` to train. Its outputs must have the shape
            of the teacher's.
        distillation_losses: a loss or list of losses called as
            `loss(teacher_outputs, student_outputs)`, e.g. `kdtf.losses.KD()`
            or `kdtf.losses.DIST()`, or their names. Defaults to
            `kdtf.losses.KD(temperature=4.0)`.
        distillation_loss_weights: one weight per distillation loss. Defaults
            to 1.0 each.
        student_loss_weight: weight `w` in [0, 1] of the task loss; the
            distillation terms get `1 - w`. Defaults to 0.5.
        sampler: optional `kdtf.samplers.Sampler` that draws synthetic inputs
            from each real batch inside the train step.
        synthetic_loss_weight: weight of the distillation loss on synthetic
            inputs, relative to the one on real inputs. Defaults to 1.0.
        synthetic_ratio: synthetic examples per real example in each step.
            Defaults to 1.0 (a synthetic batch as large as the real one).
        seed: seed of the random stream used by the sampler.
        augmentation: optional `keras.layers.Layer` applied (with
            `training=True`) to the real inputs of every training step, on
            the device inside the compiled step, before the teacher, the
            student and the sampler see them: both models see the same
            augmented view. E.g. `kdtf.augmentation.RandomCropFlip(4)` on
            uint8 images. Not with cached teacher outputs (the cache holds
            the teacher's outputs on its own views); not applied in
            `evaluate()`.
        fold_teacher_batchnorm: run the teacher with each BatchNorm that
            follows a convolution folded into that convolution's kernel and
            bias (`kdtf.folding`): the same function in inference mode,
            without a pass over every activation map (about 12% of resnet20's
            inference time on CPU). Outputs match the unfolded teacher to
            float32 rounding (checked on a random batch before use). The
            folded kernels are computed from the teacher's variables at the
            start of every `fit` and `evaluate` (the teacher is frozen in
            between) and kept in the non-trainable layer `folded_teacher`;
            the teacher's own variables are never changed. Defaults to True;
            False runs the teacher as it is.
        name: name of the model.
        **kwargs: passed to `keras.Model`.

    Example:

    ```python
    distiller = kdtf.Distiller(
        teacher=teacher, student=student,
        distillation_losses=kdtf.losses.DIST(temperature=4.0),
        student_loss_weight=0.5)
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    distiller.fit(train_ds, validation_data=val_ds, epochs=10)
    student = distiller.student
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=0.5,
        sampler=None,
        synthetic_loss_weight=1.0,
        synthetic_ratio=1.0,
        seed=None,
        augmentation=None,
        fold_teacher_batchnorm=True,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        _check_model("teacher", teacher)
        _check_model("student", student)
        _check_compatible(teacher, student, outputs=not _reads_features_only(
            distillation_losses, student_loss_weight))
        _check_single_output(teacher, "teacher")
        _check_single_output(student, "student")
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False

        self.student_loss_weight = _check_weight(
            "student_loss_weight", student_loss_weight, upper=1.0
        )
        if distillation_losses is None:
            distillation_losses = [losses_lib.KD(temperature=4.0)]
        elif not isinstance(distillation_losses, (list, tuple)):
            distillation_losses = [distillation_losses]
        if not distillation_losses:
            raise ValueError("`distillation_losses` must not be empty.")
        # The user's loss objects, as given (Keras's own losses included); the
        # loss math calls `_loss_fns`, where a keras.distillation loss is
        # wrapped into kdtf's call (`kdtf.losses.keras_compat`).
        self.distillation_losses = [_get_loss(loss) for loss in distillation_losses]
        self._loss_fns = [
            KerasDistillationLoss(loss) if is_keras_distillation_loss(loss) else loss
            for loss in self.distillation_losses
        ]
        for fn in self._loss_fns:
            if isinstance(fn, KerasDistillationLoss):
                fn.validate(teacher, student)
        for fn in self._loss_fns:
            unknown = sorted(set(getattr(fn, "needs", ())) - set(losses_lib.CONTEXT))
            if unknown:
                raise ValueError(
                    f"distillation loss {getattr(fn, 'name', type(fn).__name__)} declares needs "
                    f"{unknown}; a loss may need {list(losses_lib.CONTEXT)}."
                )
        # A regression (GaussianHead) model on one side only, or a Gaussian
        # loss on a classifier, is an error here rather than a shape surprise.
        heads.check_compatible(teacher, student, self._loss_fns)
        _check_logit_losses(teacher, self._loss_fns)
        # Softmax outputs: logit losses get log-probabilities (exact).
        self._softmax_roles = _softmax_roles(teacher, student, self._loss_fns)
        if distillation_loss_weights is None:
            distillation_loss_weights = [1.0] * len(self.distillation_losses)
        elif not isinstance(distillation_loss_weights, (list, tuple)):
            distillation_loss_weights = [distillation_loss_weights]
        if len(distillation_loss_weights) != len(self.distillation_losses):
            raise ValueError(
                "`distillation_loss_weights` needs one weight per distillation "
                f"loss: got {len(distillation_loss_weights)} weights for "
                f"{len(self.distillation_losses)} losses."
            )
        self.distillation_loss_weights = [
            _check_weight("distillation_loss_weights", w)
            for w in distillation_loss_weights
        ]

        self._teacher_forward = _forward_with_features(
            teacher, "teacher", self._loss_fns
        )
        self._teacher_features = self._teacher_forward
        if not isinstance(fold_teacher_batchnorm, bool):
            raise TypeError(
                "`fold_teacher_batchnorm` must be True or False; got "
                f"{fold_teacher_batchnorm!r}."
            )
        self.fold_teacher_batchnorm = fold_teacher_batchnorm
        self._teacher_folded = False
        self._fold_teacher()
        self._student_forward = _forward_with_features(
            student, "student", self._loss_fns
        )
        adapters = []
        for loss in self._loss_fns:
            if hasattr(loss, "build_adapter") and _feature_name(loss, "teacher"):
                loss.build_adapter(
                    _feature_shape(teacher, _feature_name(loss, "teacher")),
                    _feature_shape(student, _feature_name(loss, "student")),
                )  # lists of shapes for a loss over several layers
            if getattr(loss, "adapter", None) is not None:
                adapters.append(loss.adapter)
        # Tracked so the optimizer trains them and .keras files keep them; they
        # are never part of `student`.
        self.adapters = adapters

        self.sampler = sampler
        self.synthetic_loss_weight = _check_weight(
            "synthetic_loss_weight", synthetic_loss_weight
        )
        self.synthetic_ratio = _check_weight("synthetic_ratio", synthetic_ratio)
        if sampler is not None:
            if not callable(sampler):
                raise TypeError(
                    "`sampler` must be a kdtf.samplers.Sampler (a callable "
                    f"`sampler(x_real, seed=...)`); got {type(sampler).__name__}."
                )
            input_shape = _input_shape(student)
            if input_shape is not None and hasattr(sampler, "validate"):
                sampler.validate(input_shape)
        self.seed = seed
        self._seed_generator = keras.random.SeedGenerator(seed)
        if augmentation is not None and not isinstance(augmentation, keras.layers.Layer):
            raise TypeError(
                "`augmentation` must be a keras.layers.Layer (e.g. "
                "kdtf.augmentation.RandomCropFlip) or None; got "
                f"{type(augmentation).__name__}."
            )
        self.augmentation = augmentation

        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(
            name="distillation_loss"
        )
        # keras.distillation's name for the total (`loss` holds it too).
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.synthetic_loss_tracker = (
            keras.metrics.Mean(name="synthetic_loss") if sampler else None
        )
        self._train_step_fn, self._test_step_fn = get_step_functions()
        if teacher.built and student.built:
            self.built = True

    def build(self, input_shape):
        """Builds the teacher and student for `input_shape` if needed."""
        for model in (self.teacher, self.student):
            if not model.built:
                model.build(input_shape)
        self._fold_teacher()
        self.built = True

    def _fold_teacher(self):
        """Runs the teacher with BatchNorm folded into its convolutions, if it can."""
        if not self.fold_teacher_batchnorm or self._teacher_folded or not self.teacher.built:
            return
        from kdtf.folding import fold_batchnorm

        folded = fold_batchnorm(self._teacher_forward)
        if folded is not None:
            self._teacher_forward = folded
            # Tracked, so the folded variables are state of every backend's step.
            self.folded_teacher = folded.weights_layer
        self._teacher_folded = True

    def _refresh_folded_teacher(self):
        """Folds the teacher's current weights (once per fit/evaluate, not per step)."""
        refresh = getattr(self._teacher_forward, "refresh", None)
        if refresh is not None:
            refresh()

    # ----------------------------------------------------------------- model
    def call(self, inputs, training=None):
        """Runs the student: `distiller(x)` is `distiller.student(x)`."""
        inputs, _ = self.unpack_inputs(inputs)
        return self.student(inputs, training=training)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training; `loss` is the student's task loss.

        Args:
            optimizer: optimizer of the student (and of trainable parts of the
                distillation losses, such as feature adapters).
            loss: the student's supervised loss on labelled data, e.g.
                `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.
                Required unless `student_loss_weight == 0`.
            metrics: metrics of the student's predictions on real inputs.
            **kwargs: passed to `keras.Model.compile` (`steps_per_execution`,
                `jit_compile`, ...).
        """
        if loss is None and self.student_loss_weight > 0:
            raise ValueError(
                "`loss` (the student's task loss) is required by compile() "
                f"when student_loss_weight={self.student_loss_weight} > 0; pass "
                "e.g. keras.losses.SparseCategoricalCrossentropy("
                "from_logits=True), or set student_loss_weight=0 to distil "
                "without labels."
            )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Re-compiles a loaded `.keras` file with its saved compile args."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def _teacher_feature_extractor(self):
        """keras.distillation's name: the teacher model returning its features."""
        return self._teacher_features if self._teacher_features is not self.teacher else None

    @property
    def _student_feature_extractor(self):
        """keras.distillation's name: the student model returning its features."""
        return self._student_forward if self._student_forward is not self.student else None

    @property
    def metrics(self):
        trackers = [self.total_loss_tracker, self.student_loss_tracker,
                    self.distillation_loss_tracker]
        if self.synthetic_loss_tracker is not None:
            trackers.append(self.synthetic_loss_tracker)
        base = [m for m in super().metrics if m not in trackers]
        # Order in the progress bar: loss, its terms, then compiled metrics.
        return base[:1] + trackers + base[1:]

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            **kwargs):
        """`keras.Model.fit`, stopping with an error on a non-finite loss.

        A `kdtf.callbacks.NonFiniteGuard` is put first among the callbacks
        (unless one is given) so that training stops at the first step whose
        loss is NaN or Inf, before any later callback (such as a checkpoint)
        sees the damaged state. The update of that step is skipped on every
        backend and replica: weights, optimizer slots and iteration count
        stay as they were. A
        `kdtf.callbacks.LeakGuard` is added too (unless one is given), and a
        finite `tf.data.Dataset` without `steps_per_epoch` is iterated by one
        iterator for all epochs (`kdtf.data.one_iterator_per_fit`: each epoch
        still sees every example once), so long runs do not grow memory
        through upstream leaks.
        """
        from kdtf.callbacks import LeakGuard, NonFiniteGuard

        self._refresh_folded_teacher()
        callbacks = list(callbacks or [])
        if not any(isinstance(c, NonFiniteGuard) for c in callbacks):
            callbacks.insert(0, NonFiniteGuard())
        if not any(isinstance(c, LeakGuard) for c in callbacks):
            callbacks.append(LeakGuard())
        if _is_tf_dataset(x):
            from kdtf.data import one_iterator_per_fit

            x, kwargs["steps_per_epoch"] = one_iterator_per_fit(x, kwargs.get("steps_per_epoch"))
        self._fitting = True  # the teacher is frozen: fit's validation needs no refold
        try:
            return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                               callbacks=callbacks, **kwargs)
        finally:
            self._fitting = False

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate`, with the folded teacher refreshed first (not
        again for `fit`'s validation, which `fit` folded for)."""
        if not getattr(self, "_fitting", False):
            self._refresh_folded_teacher()
        return super().evaluate(*args, **kwargs)

    def train_step(self, *args, **kwargs):
        return self._train_step_fn(self, *args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 reduces the first batch across workers here, which
        # fails under MultiWorkerMirroredStrategy (keras#20585). Only the
        # TensorFlow trainer calls this.
        from kdtf import distribute

        return distribute.maybe_symbolic_build(self, iterator, data_batch)

    def test_step(self, *args, **kwargs):
        return self._test_step_fn(self, *args, **kwargs)

    # ------------------------------------------------------ shared loss math
    def unpack_inputs(self, x):
        """Splits a batch's `x` into `(inputs, cached teacher outputs or None)`.

        Args:
            x: the inputs of a batch: a tensor, or the dict
                `{"inputs": ..., "teacher_outputs": ...}` of cached batches
                (see the class docstring).

        Returns:
            `(inputs, cached)`; `cached` is None for ordinary batches.
        """
        inputs, cached, _ = batches.split(x)
        return inputs, cached

    @property
    def needs_index(self):
        """Whether a loss needs each example's index (`"index"` in its `needs`):
        training batches must then be `kdtf.batches.make(x, index=i)`."""
        return any("index" in getattr(fn, "needs", ()) for fn in self._loss_fns)

    def batch_index(self, x):
        """The examples' dataset indices a batch's `x` carries, or None.

        Args:
            x: the inputs of a batch, before `unpack_inputs`: the dict
                `{"inputs": ..., "index": ...}` carries the index (see the
                class docstring).

        Returns:
            An int tensor of shape `[B]`, or None.
        """
        return batches.split(x)[2]

    def teacher_outputs(self, x, cached=None, num_real=None):
        """Teacher outputs (and named features) as a dict, inference mode.

        Args:
            x: inputs, real then synthetic (the `x_all` of `synthesize`).
            cached: optional cached teacher outputs on the real rows of `x`
                (see the class docstring). The teacher then runs on the
                synthetic rows only, or not at all.
            num_real: how many leading rows of `x` are real; None when all
                are.

        Returns:
            A dict with the teacher's output under `"output"` (and named
            features when not cached), one row per row of `x`.
        """
        if cached is None:
            return _as_dict(self._teacher_forward(x, training=False))
        cached = self._check_cached(cached, x, num_real)
        if num_real is None:
            return {_OUTPUT: cached}
        synthetic = _as_dict(self._teacher_forward(x[num_real:], training=False))
        return {
            _OUTPUT: ops.concatenate(
                [cached, ops.cast(synthetic[_OUTPUT], cached.dtype)], axis=0
            )
        }

    def _check_cached(self, cached, x, num_real):
        for loss in self._loss_fns:
            if _feature_name(loss, "teacher"):
                raise ValueError(
                    "Cached teacher outputs hold the teacher's final output "
                    f"only; the distillation loss {loss.name!r} needs its "
                    f"layer {_feature_name(loss, 'teacher')!r}. Train without "
                    "the cache (plain (x, y) batches) for feature losses."
                )
        cached = ops.cast(ops.convert_to_tensor(cached), "float32")
        try:
            want = tuple(self.teacher.outputs[0].shape[1:])
        except (AttributeError, ValueError, IndexError, TypeError):
            want = None
        got = tuple(cached.shape[1:])
        if want is not None and not shapes_compatible(want, got):
            raise ValueError(
                f"Cached teacher outputs have shape {got} per example but the "
                f"teacher {self.teacher.name!r} outputs {want}: the cache was "
                "built for another teacher. Rebuild it with "
                "kdtf.caching.TeacherCache.build(teacher, x)."
            )
        rows = x.shape[0] if num_real is None else num_real
        if isinstance(rows, int) and cached.shape[0] is not None and cached.shape[0] != rows:
            raise ValueError(
                f"A batch has {rows} real inputs but {cached.shape[0]} cached "
                "teacher outputs; each real input needs exactly one."
            )
        return cached

    def student_outputs(self, x, training):
        """Student outputs (and named features) as a dict."""
        return _as_dict(self._student_forward(x, training=training))

    def training_inputs(self, x, cached=None):
        """The inputs of a training step: `augmentation(x)` plus synthetic ones.

        Args:
            x: the real input batch.
            cached: the batch's cached teacher outputs, or None.

        Returns:
            `(x_all, num_real)` as `synthesize` returns them.
        """
        if self.augmentation is not None:
            if cached is not None:
                raise ValueError(
                    "`augmentation` cannot be used with cached teacher outputs: the cache "
                    "holds the teacher's outputs on its own inputs or views, not on this "
                    "step's augmentation. Augment when building the cache "
                    "(kdtf.caching.TeacherCache views), or train online."
                )
            x = self.augmentation(x, training=True)
        return self.synthesize(x)

    def synthesize(self, x):
        """Returns `x` concatenated with synthetic inputs, and the real count.

        Args:
            x: the real input batch.

        Returns:
            `(x_all, num_real)`; without a sampler, `(x, None)`.
        """
        if self.sampler is None or self.synthetic_ratio == 0:
            return x, None
        num_real = ops.shape(x)[0]
        num_synthetic = _num_synthetic(x, self.synthetic_ratio)
        x_syn = self.sampler(
            x, seed=self._seed_generator, num_samples=num_synthetic
        )
        x_syn = ops.stop_gradient(ops.cast(x_syn, x.dtype))
        return ops.concatenate([x, x_syn], axis=0), num_real

    def compute_distillation_loss(
        self, y, teacher_outputs, student_outputs, num_real, sample_weight=None,
        training=True, index=None,
    ):
        """The objective of one step, shared by every backend's train step.

        Args:
            y: labels of the real inputs (or None when distilling unlabelled).
            teacher_outputs: dict of teacher outputs (`"output"`, and named
                features) on real (then synthetic) inputs.
            student_outputs: the same for the student.
            num_real: how many leading rows are real inputs, the rest being
                synthetic; None when all rows are real.
            sample_weight: optional weights of the real inputs.
            training: whether trainable parts of the losses (feature
                adapters and their BatchNorm) run in training mode.
            index: the real rows' dataset indices (`batch_index`), or None;
                given to losses that need `"index"`.

        Returns:
            `(total_loss, terms, student_real_outputs)` where the losses are
            scaled for `tf.distribute` as Keras losses are, and `terms` maps
            `student_loss`, `distillation_loss` (and `synthetic_loss`) to
            their values.
        """
        has_synthetic = num_real is not None
        if has_synthetic:
            t_real = {k: v[:num_real] for k, v in teacher_outputs.items()}
            t_syn = {k: v[num_real:] for k, v in teacher_outputs.items()}
            s_real = {k: v[:num_real] for k, v in student_outputs.items()}
            s_syn = {k: v[num_real:] for k, v in student_outputs.items()}
        else:
            t_real, s_real = teacher_outputs, student_outputs
        terms = {}
        student_loss = ops.zeros((), dtype="float32")
        if self.student_loss_weight > 0 and y is not None:
            student_loss = ops.cast(
                self._compile_loss(y, s_real[_OUTPUT], sample_weight), "float32"
            )
        for loss in self.student.losses:  # regularisation
            student_loss = student_loss + _scale_for_replicas(
                ops.cast(ops.sum(loss), "float32")
            )
        terms["student_loss"] = student_loss
        if index is None and training:
            for fn in self._loss_fns:
                if "index" in getattr(fn, "needs", ()):
                    raise ValueError(
                        f"the distillation loss {getattr(fn, 'name', type(fn).__name__)} needs "
                        "each example's index in the training set: give batches x = "
                        f"{{{INPUTS_KEY!r}: inputs, {INDEX_KEY!r}: index}}, e.g. fit({{"
                        f"{INPUTS_KEY!r}: x, {INDEX_KEY!r}: np.arange(len(x))}}, y)."
                    )
        terms["distillation_loss"] = self._weighted_distillation(
            t_real, s_real, sample_weight, training=training, labels=y, index=index
        )
        total = (
            self.student_loss_weight * student_loss
            + (1.0 - self.student_loss_weight) * terms["distillation_loss"]
        )
        if has_synthetic:
            terms["synthetic_loss"] = self._weighted_distillation(
                t_syn, s_syn, training=training
            )
            total = total + (
                (1.0 - self.student_loss_weight)
                * self.synthetic_loss_weight
                * terms["synthetic_loss"]
            )
        return total, terms, s_real[_OUTPUT]

    def _weighted_distillation(
        self, teacher_outputs, student_outputs, sample_weight=None, training=True, labels=None,
        index=None,
    ):
        total = ops.zeros((), dtype="float32")
        context = {"labels": labels, "training": training, "index": index}
        for loss, weight in zip(self._loss_fns, self.distillation_loss_weights):
            needs = getattr(loss, "needs", ())
            if "step" in needs and "step" not in context:
                # Train steps only: evaluation reports the loss past any warm-up.
                optimizer = getattr(self, "optimizer", None)
                context["step"] = (ops.convert_to_tensor(optimizer.iterations)
                                   if training and optimizer is not None else None)
            kwargs = {name: context[name] for name in needs}
            t_name, s_name = _feature_name(loss, "teacher"), _feature_name(loss, "student")
            if isinstance(t_name, tuple):  # a loss over several layers gets lists
                t = [teacher_outputs[n] for n in t_name]
                s = [student_outputs[n] for n in s_name]
            else:
                t, s = teacher_outputs[t_name or _OUTPUT], student_outputs[s_name or _OUTPUT]
            if _softmax_mode(loss) == "log_probabilities":
                if t_name is None and "teacher" in self._softmax_roles:
                    t = heads.log_probabilities(t)
                if s_name is None and "student" in self._softmax_roles:
                    s = heads.log_probabilities(s)
            value = loss(t, s, sample_weight=sample_weight, **kwargs)
            total = total + weight * ops.cast(value, "float32")
        return total

    def update_loss_trackers(self, total, terms, batch_size):
        """Updates the logged means with unscaled (per-example) values."""
        self._loss_tracker.update_state(
            _unscale_for_replicas(total), sample_weight=batch_size
        )
        self.total_loss_tracker.update_state(
            _unscale_for_replicas(total), sample_weight=batch_size
        )
        self.student_loss_tracker.update_state(
            _unscale_for_replicas(terms["student_loss"]), sample_weight=batch_size
        )
        self.distillation_loss_tracker.update_state(
            _unscale_for_replicas(terms["distillation_loss"]),
            sample_weight=batch_size,
        )
        if "synthetic_loss" in terms and self.synthetic_loss_tracker is not None:
            self.synthetic_loss_tracker.update_state(
                _unscale_for_replicas(terms["synthetic_loss"]),
                sample_weight=batch_size,
            )

    # ---------------------------------------------------------- serialising
    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "teacher": serialize(self.teacher),
            "student": serialize(self.student),
            "distillation_losses": [serialize(l) for l in self.distillation_losses],
            "distillation_loss_weights": list(self.distillation_loss_weights),
            "student_loss_weight": self.student_loss_weight,
            "sampler": serialize(self.sampler) if self.sampler is not None else None,
            "synthetic_loss_weight": self.synthetic_loss_weight,
            "synthetic_ratio": self.synthetic_ratio,
            "seed": self.seed,
            "augmentation": serialize(self.augmentation) if self.augmentation is not None else None,
            "fold_teacher_batchnorm": self.fold_teacher_batchnorm,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        config["teacher"] = deserialize(config["teacher"])
        config["student"] = deserialize(config["student"])
        config["distillation_losses"] = [
            deserialize(l) for l in config["distillation_losses"]
        ]
        for key in ("sampler", "augmentation"):
            if config.get(key) is not None:
                config[key] = deserialize(config[key])
        return cls(**config)


_OUTPUT = "output"
# The batch format's keys, defined in kdtf.batches (kept here for old imports).
INPUTS_KEY = batches.INPUTS_KEY
CACHED_OUTPUTS_KEY = batches.CACHED_OUTPUTS_KEY
INDEX_KEY = batches.INDEX_KEY


def _feature_name(loss, role):
    """The layer a loss reads (`{role}_layer_name`), None for output losses.

    A loss over several layers declares `{role}_layer_names` instead (a list,
    e.g. ReviewKD's stages): this returns them as a tuple, and the loss gets
    lists of features and `build_adapter` lists of shapes, in that order.
    """
    names = getattr(loss, f"{role}_layer_names", None)
    if names is not None:
        return tuple(names)
    return getattr(loss, f"{role}_layer_name", None)


def _as_dict(outputs):
    if isinstance(outputs, (list, tuple)):
        raise ValueError(
            f"the teacher or student returned {len(outputs)} outputs; kdtf.Distiller "
            "distils models with one output. " + _ONE_OUTPUT_FIX
        )
    return outputs if isinstance(outputs, dict) else {_OUTPUT: outputs}


_ONE_OUTPUT_FIX = (
    "Distil one head at a time: wrap each side as keras.Model(model.inputs, "
    "model.outputs[i]) (the same i for teacher and student) and give that pair to a "
    "Distiller; the heads share the backbone's weights."
)


def _feature_shape(model, layer_name):
    if isinstance(layer_name, tuple):
        return [_feature_shape(model, name) for name in layer_name]
    return tuple(model.get_layer(layer_name).output.shape[1:])


def _forward_with_features(model, role, losses):
    """`model`, or a model returning its output and the features `losses` need.

    One forward pass yields everything: the extractor shares the layers (and
    weights) of `model`.
    """
    names = []
    for loss in losses:
        wanted = _feature_name(loss, role)
        for name in wanted if isinstance(wanted, tuple) else (wanted,):
            if name and name not in names:
                names.append(name)
    if not names:
        return model
    try:
        inputs, output = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = output = None
    if not inputs or not output or len(output) != 1:
        raise ValueError(
            f"Feature distillation needs a functional {role} with one output to "
            f"read layers {names} from; {model.name!r} is not (build it with "
            "the functional API, or distil its outputs only)."
        )
    valid = [layer.name for layer in model.layers]
    outputs = {_OUTPUT: output[0]}
    for name in names:
        if name not in valid:
            raise ValueError(
                f"{role}_layer_name={name!r} is not a layer of the {role} "
                f"{model.name!r}; valid layer names: {', '.join(valid)}."
            )
        outputs[name] = model.get_layer(name).output
    return keras.Model(inputs, outputs, name=f"{model.name}_features")


def _num_synthetic(x, ratio):
    static = x.shape[0]
    if static is not None:
        return max(1, int(round(static * ratio)))
    return ops.maximum(
        1, ops.cast(ops.round(ops.cast(ops.shape(x)[0], "float32") * ratio), "int32")
    )


def _scale_for_replicas(value):
    from keras.src.losses import loss as keras_loss

    return keras_loss.scale_loss_for_distribution(value)


def _unscale_for_replicas(value):
    from keras.src.losses import loss as keras_loss

    return keras_loss.unscale_loss_for_distribution(value)


def _check_model(arg, model):
    # ValueError, as keras.distillation raises (its own tests check it).
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`{arg}` must be a keras.Model; got {type(model).__name__}."
        )


def _is_tf_dataset(x):
    """Whether `x` is a `tf.data.Dataset`, without importing TensorFlow.

    A dataset can only exist once TensorFlow is imported, so where it is not
    (Keras on JAX alone) nothing is one.
    """
    tf = sys.modules.get("tensorflow")
    data = getattr(tf, "data", None)
    return data is not None and isinstance(x, data.Dataset)


def _get_loss(loss):
    """A kdtf loss from a name or instance; Keras distillation losses as they are."""
    if is_keras_distillation_loss(loss):
        return loss
    return losses_lib.get(loss)


def _softmax_mode(loss):
    """What a loss does with a softmax output: see `_softmax_roles`."""
    mode = getattr(loss, "softmax_outputs", None)
    if mode is not None:
        return mode
    return "log_probabilities" if getattr(loss, "logit_loss", False) else "as_is"


def _softmax_roles(teacher, student, loss_fns):
    """The roles ("teacher", "student") whose model ends in a softmax.

    Logit losses (KD, DIST, categorical DistributionKL, Keras's KL
    LogitsDistillation) then get `log p`, exact since softmax(log p / T) =
    softmax(z / T); a loss that needs the raw logits is refused, naming the
    layer. A one-line notice says which outputs are converted.
    """
    roles = {}
    for role, model in (("teacher", teacher), ("student", student)):
        layer = heads.softmax_layer(model)
        if layer is None:
            continue
        roles[role] = layer
        for fn in loss_fns:
            if _feature_name(fn, role) is None and _softmax_mode(fn) == "refuse":
                raise ValueError(
                    f"the {role} {model.name!r} ends in a softmax (layer {layer.name!r}), and "
                    f"the distillation loss {getattr(fn, 'name', type(fn).__name__)} needs its "
                    "logits. Build the model without the softmax (keras.applications: "
                    "classifier_activation=None; your own model: activation=None on the last "
                    "layer), or use a KL divergence / kdtf.losses.KD, which are exact on "
                    "probabilities."
                )
    used = [role for role in roles
            if any(_feature_name(fn, role) is None and _softmax_mode(fn) == "log_probabilities"
                   for fn in loss_fns)]
    if used:
        names = " and ".join(f"the {role} (layer {roles[role].name!r})" for role in used)
        print(f"[kdtf] {names} ends in a softmax: distilling its log-probabilities, which is "
              "exact (softmax(log p / T) = softmax(z / T)).", file=sys.stderr, flush=True)
    return tuple(roles)


def _check_single_output(model, role):
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return
    if outputs and len(outputs) > 1:
        raise ValueError(
            f"the {role} {model.name!r} has {len(outputs)} outputs; kdtf.Distiller distils "
            f"models with one output. {_ONE_OUTPUT_FIX}"
        )


def _check_logit_losses(teacher, loss_fns):
    """A softmax over one logit is constant: KD/DIST would train nothing."""
    try:
        width = teacher.outputs[0].shape[-1]
    except (AttributeError, ValueError, IndexError, TypeError):
        return
    if width != 1:
        return
    for fn in loss_fns:
        if getattr(fn, "logit_loss", False) and _feature_name(fn, "teacher") is None:
            raise ValueError(
                f"the teacher {teacher.name!r} has one output, but "
                f"{getattr(fn, 'name', type(fn).__name__)} compares softmax distributions over "
                "classes, which are constant for one output (the loss would be 0 with no "
                "gradient). For regression distil with keras.distillation.FeatureDistillation("
                "loss='mse') on the outputs, or give both models a kdtf.heads.GaussianHead and "
                "use kdtf.losses.DistributionKL(family='gaussian'); for two classes give both "
                "models 2 logits."
            )


def _input_shape(model):
    from kdtf.models import known_inputs

    inputs = known_inputs(model)
    if len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])


def _reads_features_only(losses, student_loss_weight):
    """No task loss, and every loss reads named layers of both models: the outputs
    are compared by nothing (SSKD's stage phases distil stage-prefix models)."""
    losses = list(losses) if isinstance(losses, (list, tuple)) else [losses]
    return student_loss_weight == 0 and bool(losses) and all(
        _feature_name(loss, "teacher") and _feature_name(loss, "student") for loss in losses)


def _check_compatible(teacher, student, outputs=True):
    """Static shape checks that keras.distillation also makes, with clearer errors."""
    for kind in ("inputs", "outputs") if outputs else ("inputs",):
        try:
            t, s = getattr(teacher, kind), getattr(student, kind)
        except (AttributeError, ValueError):
            continue
        if not t or not s:
            continue
        if len(t) != len(s):
            raise ValueError(
                f"teacher and student must have the same number of {kind}: "
                f"teacher has {len(t)}, student has {len(s)}."
            )
        for a, b in zip(t, s):
            ta, sb = tuple(a.shape[1:]), tuple(b.shape[1:])
            if not shapes_compatible(ta, sb):
                what = "outputs (classes)" if kind == "outputs" else "inputs"
                hint = ""
                if kind == "inputs" and len(ta) == 3 and len(sb) == 3 and ta[-1] == sb[-1]:
                    hint = (" For a teacher trained at another image size, resize for it: "
                            f"teacher = kdtf.models.resize_inputs(teacher, {sb}).")
                raise ValueError(
                    f"teacher and student have incompatible {what}: teacher "
                    f"{kind[:-1]} shape {ta}, student {kind[:-1]} shape {sb} "
                    "(batch dimension left out). A student distilled from this "
                    f"teacher must take and return tensors of the same shapes.{hint}"
                )


def _check_weight(arg, value, upper=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{arg}` must be a number; got {value!r}.")
    if value < 0 or (upper is not None and value > upper):
        bound = f"in [0, {upper}]" if upper is not None else ">= 0"
        raise ValueError(f"`{arg}` must be {bound}; got {value}.")
    return float(value)
