"""Stage views of models and stage-by-stage knowledge distillation (SSKD).

A backbone is a chain of stages 1..K followed by a task head. Zoo models
name the layers ending each stage "stage1".."stageK" (see
`kdtf.models.stage_endpoints`). This module gives views of such models
without rewriting them (every view shares the model's layers and weights):

* `stage_models(model, stage_names)`: feature extractors, input -> stage k.
* `stage_submodel(model, start, end)`: the slice of a functional graph
  between two named layers, taking `start`'s output as its input.
* `feature_extractor(model, layer_names)`: one model returning the outputs
  and the named layers' features in a single forward pass.

`StagewiseDistiller` trains a student stage by stage from a teacher
(Gao, Shen et al., arXiv 1812.01819): phase k trains stage k alone to match
the teacher's stage-k features through an adapter, with stages 1..k-1
frozen in inference mode and later stages not computed; the last phase
trains the head on labels with the backbone frozen.

The head phase starts from a closed-form fit of the head's final Dense
layer (see `StagewiseDistiller(head_init=...)`). Training a freshly
initialised head by gradient descent on frozen features is not invariant
to the scale of those features, and SSKD leaves that scale free: each
backbone loss goes through an adapter ending in BatchNorm, so
`A_k(c * F_S^k)` does not depend on `c`. On MNIST-1D the frozen pooled
features had a per-channel spread of ~0.06 around a mean of ~0.18 and the
head (Adam 3e-3, 6 epochs) stayed at chance (11%), on MNIST they had an RMS
of ~20 and Adam overshot (75%), while a logistic regression on the same
frozen features reached 54-59% and 96-97%. A ridge fit is invariant to that
scale (48-50% and 95-97% without any gradient step).

Subclassed (non-functional) models can take part by defining
`stage_outputs(x, training)` (a list of the K stage features; enough for a
teacher) and, to be trained as a student, `stage_submodels()` (a list of
K + 1 layers: the stages, then the head, each taking the previous one's
output).
"""
import hashlib
import json
import os

import keras
import numpy as np

from kdtf.losses.feature import FeatureMSE


# ----------------------------------------------------------------- views
def _is_functional(model):
    return (
        hasattr(model, "_nodes_by_depth")
        and getattr(model, "_inputs_struct", None) is not None
    )


def _layer_names(model):
    return [layer.name for layer in model.layers]


def _check_model(arg, model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{arg}` must be a keras.Model; got {type(model).__name__}."
        )


def _layer_output(model, name):
    """The output KerasTensor of layer `name` inside functional `model`."""
    if not isinstance(name, str):
        raise TypeError(f"Stage/layer names must be str; got {name!r}.")
    layer = None
    for candidate in model.layers:
        if candidate.name == name:
            layer = candidate
            break
    if layer is None:
        raise ValueError(
            f"Model {model.name!r} has no layer named {name!r}; its layers "
            f"are: {_layer_names(model)}."
        )
    for depth in sorted(model._nodes_by_depth):
        for node in model._nodes_by_depth[depth]:
            if node.operation is layer:
                if len(node.outputs) != 1:
                    raise ValueError(
                        f"Layer {name!r} of model {model.name!r} has "
                        f"{len(node.outputs)} outputs; a stage must end in "
                        "a layer with a single output."
                    )
                return node.outputs[0]
    raise ValueError(
        f"Layer {name!r} is not connected in the graph of model {model.name!r}."
    )


def _single_input(model):
    if len(model.inputs) != 1:
        raise ValueError(
            f"Stage views need a model with one input; model {model.name!r} "
            f"has {len(model.inputs)}."
        )
    return model.inputs[0]


def default_stages(model):
    """The stage names of `model`: `kdtf.models.stage_endpoints(model)`.

    Args:
        model: a `keras.Model`.

    Returns:
        A list of layer names; for subclassed models with `stage_outputs`,
        the placeholder names "stage1".."stageK" are derived from
        `stage_submodels()` when it exists.
    """
    from kdtf.models import stage_endpoints

    if not _is_functional(model) and hasattr(model, "stage_submodels"):
        return [f"stage{k}" for k in range(1, len(model.stage_submodels()))]
    return stage_endpoints(model)


def stage_models(model, stage_names=None):
    """Feature extractors: one model per stage, mapping inputs to its output.

    Args:
        model: a functional `keras.Model`, or a subclassed one with a method
            `stage_outputs(x, training)` returning the list of stage features.
        stage_names: names of the layers ending each stage. Defaults to
            `kdtf.models.stage_endpoints(model)`. For subclassed models,
            names are "stage1".."stageK" indexing `stage_outputs`.

    Returns:
        A list of `keras.Model`s sharing `model`'s layers; the k-th one
        returns the output of stage k.

    Raises:
        ValueError: an unknown stage name (the message lists the layers).

    Example:

    >>> extractors = stage_models(kdtf.models.get("mnist1d_cnn"))
    >>> [e.output.shape for e in extractors]
    [(None, 40, 32), (None, 20, 64), (None, 20, 64)]
    """
    _check_model("model", model)
    if not _is_functional(model):
        if not hasattr(model, "stage_outputs"):
            raise TypeError(
                f"Model {model.name!r} is not functional; give it a method "
                "`stage_outputs(x, training)` returning its stage features "
                "to use it with stage views."
            )
        if stage_names is None:
            stage_names = default_stages(model)
        indices = []
        for name in stage_names:
            if not (
                isinstance(name, str)
                and name.startswith("stage")
                and name[5:].isdigit()
                and int(name[5:]) >= 1
            ):
                raise ValueError(
                    f"Subclassed model {model.name!r} names its stages "
                    f"'stage1', 'stage2', ... (indexes into stage_outputs); "
                    f"got {name!r}."
                )
            indices.append(int(name[5:]) - 1)
        return [_StageOutput(model, i, name=f"{model.name}_{n}")
                for i, n in zip(indices, stage_names)]
    if stage_names is None:
        stage_names = default_stages(model)
    inputs = _single_input(model)
    return [
        keras.Model(inputs, _layer_output(model, name), name=f"{model.name}_{name}")
        for name in stage_names
    ]


def feature_extractor(model, layer_names, include_outputs=True):
    """One model returning `model`'s outputs and the named layers' outputs.

    Args:
        model: a functional `keras.Model`.
        layer_names: a layer name or a list of them.
        include_outputs: also return the model's own outputs first.

    Returns:
        A `keras.Model` sharing `model`'s layers, returning
        `[outputs, feature_1, ...]` (or only the features).

    Example:

    >>> fx = feature_extractor(kdtf.models.get("mnist1d_cnn"), ["stage2"])
    >>> logits, stage2 = fx(x)
    """
    _check_model("model", model)
    if not _is_functional(model):
        raise TypeError(
            f"feature_extractor needs a functional model; {model.name!r} is "
            f"a subclassed {type(model).__name__}."
        )
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    outputs = [_layer_output(model, name) for name in layer_names]
    if include_outputs:
        outputs = [model.outputs[0] if len(model.outputs) == 1 else model.outputs] + outputs
    return keras.Model(model.inputs, outputs, name=f"{model.name}_features")


def stage_submodel(model, start=None, end=None, name=None):
    """The slice of a functional model between two named layers.

    The graph between the output of layer `start` and the output of layer
    `end` is rebuilt on a new input of `start`'s output shape, reusing the
    same layer objects (so the weights are shared with `model`).

    Args:
        model: a functional `keras.Model` with one input.
        start: name of the layer whose output is the slice's input; None for
            the model's input.
        end: name of the layer whose output is the slice's output; None for
            the model's output.
        name: name of the returned model.

    Returns:
        A functional `keras.Model` computing `end` from `start`.

    Raises:
        ValueError: unknown names (listing the layers), `end` not after
            `start`, or a slice that also needs tensors from before `start`
            (a skip connection crossing the boundary).

    Example:

    >>> model = kdtf.models.get("mnist1d_cnn")
    >>> stage2 = stage_submodel(model, "stage1", "stage2")
    >>> stage2.input.shape, stage2.output.shape
    ((None, 40, 32), (None, 20, 64))
    """
    _check_model("model", model)
    if not _is_functional(model):
        raise TypeError(
            f"stage_submodel needs a functional model; {model.name!r} is a "
            f"subclassed {type(model).__name__} (define stage_submodels())."
        )
    model_input = _single_input(model)
    start_tensor = model_input if start is None else _layer_output(model, start)
    if end is None:
        if len(model.outputs) != 1:
            raise ValueError(
                f"Model {model.name!r} has {len(model.outputs)} outputs; "
                "name the end layer."
            )
        end_tensor = model.outputs[0]
    else:
        end_tensor = _layer_output(model, end)
    if start is None:
        return keras.Model(model_input, end_tensor, name=name or f"{model.name}_to_{end}")

    # Backward pass: the nodes needed between start and end.
    needed = set()
    stack = [end_tensor]
    input_ids = {id(t) for t in model.inputs}
    while stack:
        tensor = stack.pop()
        if tensor is start_tensor:
            continue
        if id(tensor) in input_ids:
            raise ValueError(
                f"Cannot slice model {model.name!r} from {start!r} to "
                f"{end or 'its output'!r}: the slice also depends on tensors "
                f"computed before {start!r} (or {end!r} does not come after "
                f"{start!r}). Layers in order: {_layer_names(model)}."
            )
        operation, node_index, _ = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        if id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(node.arguments.keras_tensors)

    new_input = keras.Input(
        batch_shape=tuple(start_tensor.shape), dtype=start_tensor.dtype,
        name=f"{start}_input",
    )
    values = {id(start_tensor): new_input}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if id(node) not in needed:
                continue
            args, kwargs = node.arguments.fill_in(values)
            outputs = node.operation(*args, **kwargs)
            for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
                values[id(old)] = new
    return keras.Model(
        new_input, values[id(end_tensor)],
        name=name or f"{model.name}_{start}_to_{end or 'output'}",
    )


def student_parts(model, stage_names=None):
    """Splits a model into K stage sub-models and a head.

    Args:
        model: a functional `keras.Model`, or a subclassed one with
            `stage_submodels()`.
        stage_names: names of the layers ending each stage; defaults to
            `kdtf.models.stage_endpoints(model)`.

    Returns:
        `(stages, head)`: a list of K models (stage k takes stage k-1's
        output; stage 1 the model input) and the head (stage K's output ->
        model output).

    Example:

    >>> stages, head = student_parts(kdtf.models.get("mnist1d_cnn_small"))
    >>> len(stages)
    3
    """
    _check_model("model", model)
    if not _is_functional(model):
        if not hasattr(model, "stage_submodels"):
            raise TypeError(
                f"Model {model.name!r} is not functional; give it a method "
                "`stage_submodels()` returning its K stages and head as "
                "layers to train it stage by stage."
            )
        parts = list(model.stage_submodels())
        if len(parts) < 2:
            raise ValueError(
                f"{model.name}.stage_submodels() must return at least one "
                f"stage and the head; got {len(parts)} parts."
            )
        return parts[:-1], parts[-1]
    if stage_names is None:
        stage_names = default_stages(model)
    stage_names = list(stage_names)
    bounds = [None] + stage_names
    stages = [
        stage_submodel(model, bounds[i], bounds[i + 1],
                       name=f"{model.name}_{bounds[i + 1]}")
        for i in range(len(stage_names))
    ]
    head = stage_submodel(model, stage_names[-1], None, name=f"{model.name}_head")
    return stages, head


class _StageOutput(keras.Model):
    """Stage `index` of a subclassed model that defines `stage_outputs`."""

    def __init__(self, model, index, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.index = index

    def call(self, x, training=False):
        return self.model.stage_outputs(x, training=training)[self.index]


def split_stages(stages):
    """`stages` as `(teacher_names, student_names)`.

    Args:
        stages: a non-empty list whose entries are layer names (the same
            name in both models) or `(teacher_name, student_name)` pairs.

    Returns:
        Two lists of layer names, one per model, in stage order.
    """
    if isinstance(stages, str) or not isinstance(stages, (list, tuple)) or not stages:
        raise TypeError(
            "`stages` must be None, a non-empty list of layer names, or a "
            f"list of (teacher_name, student_name) pairs; got {stages!r}."
        )
    t_names, s_names = [], []
    for item in stages:
        if isinstance(item, str):
            t_names.append(item)
            s_names.append(item)
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            t_names.append(item[0])
            s_names.append(item[1])
        else:
            raise TypeError(
                "`stages` entries must be layer names or (teacher_name, "
                f"student_name) pairs; got {item!r}."
            )
    return t_names, s_names


# ------------------------------------------------------- multi-phase runs
class Phase:
    """One training run of a multi-phase schedule, for `run_phases`.

    Args:
        name: the phase's name: its key in the returned histories and its
            backup folder.
        epochs: epochs to train; 0 skips the phase.
        build: a function returning the phase's compiled `keras.Model`,
            called when the phase runs (inside the caller's distribution
            strategy scope, if any).
        fit_args: arguments of `model.fit` besides `epochs`, `callbacks` and
            `verbose` (`x`, `y`, `batch_size`, `validation_data`, ...).
        on_start: optional function called before the phase's first epoch,
            after the model is built; not called when a backup is restored.
        callbacks: optional function `model -> list of callbacks` run before
            the backup at each epoch end (so that what they change is saved).
        header: a line printed when the phase starts (with `verbose`).
    """

    def __init__(self, name, epochs, build, fit_args, on_start=None, callbacks=None, header=None):
        self.name = name
        self.epochs = _check_epochs("epochs", epochs)
        self.build = build
        self.fit_args = dict(fit_args)
        self.on_start = on_start
        self.callbacks = callbacks
        self.header = header or name


def run_phases(phases, checkpoint_dir=None, callbacks=None, verbose="auto", fingerprint=None):
    """Runs `phases` one after another, each a `model.fit`, resumable.

    With `checkpoint_dir`, every phase backs up after each epoch with
    `kdtf.callbacks.BackupAndRestore` into `<checkpoint_dir>/phase<i>_<name>`
    (kept after the phase ends). A rerun restores each phase's latest
    backup: a phase that finished is restored without training (and without
    its `on_start`), an interrupted one continues at its next epoch. A backup
    of other settings (other epochs, weight shapes or `fingerprint`) is an
    error naming its directory.

    Args:
        phases: a list of `Phase`s.
        checkpoint_dir: optional directory of the backups.
        callbacks: Keras callbacks passed to every phase's `fit`.
        verbose: Keras verbosity; also prints each phase's header.
        fingerprint: optional string identifying the run, part of every
            backup's fingerprint.

    Returns:
        A dict mapping the names of the phases that trained in this call to
        their Keras history dicts.

    Example:

    ```python
    histories = run_phases([
        Phase("pretrain", 5, make_pretraining_model, {"x": x_unlabeled}),
        Phase("finetune", 3, make_classifier, {"x": x, "y": y}),
    ], checkpoint_dir="runs/two_phase")
    ```
    """
    from kdtf import callbacks as callbacks_lib

    histories = {}
    for index, phase in enumerate(phases, 1):
        if phase.epochs == 0:
            continue
        model = phase.build()
        phase_callbacks = list(phase.callbacks(model)) if phase.callbacks else []
        backup = None
        if checkpoint_dir is not None:
            settings = {"phase": phase.name, "epochs": phase.epochs, "run": fingerprint,
                        "shapes": [list(w.shape) for w in model.weights]}
            backup = callbacks_lib.BackupAndRestore(
                os.path.join(checkpoint_dir, f"phase{index}_{phase.name}"),
                fingerprint=hashlib.sha1(json.dumps(settings).encode()).hexdigest(),
                delete_checkpoint=False,
            )
            phase_callbacks.append(backup)
        phase_callbacks.append(_PhaseStart(phase, f"Phase {index} of {len(phases)}", backup, verbose))
        history = model.fit(**phase.fit_args, epochs=phase.epochs, verbose=verbose,
                            callbacks=phase_callbacks + list(callbacks or []))
        if history.epoch:
            histories[phase.name] = history.history
    return histories


class _PhaseStart(keras.callbacks.Callback):
    """Prints a phase's header and runs its `on_start`, unless restored."""

    def __init__(self, phase, label, backup, verbose):
        super().__init__()
        self.phase, self.label, self.backup, self.verbose = phase, label, backup, verbose

    def on_train_begin(self, logs=None):
        done = self.backup.restored_epoch if self.backup is not None else 0
        if done >= self.phase.epochs:
            return  # finished before: restored, nothing to train
        if self.verbose:
            resumed = f", resuming at epoch {done + 1}" if done else ""
            print(f"{self.label}: {self.phase.header}, {self.phase.epochs} epochs{resumed}",
                  flush=True)
        if not done and self.phase.on_start is not None:
            self.phase.on_start()


class _KeepBetterHead(keras.callbacks.Callback):
    """After the head phase's last epoch: back to the closed-form head if better."""

    def __init__(self, owner, epochs, data, batch_size, verbose):
        super().__init__()
        self.owner, self.epochs, self.data = owner, epochs, data
        self.batch_size, self.verbose = batch_size, verbose

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            self.owner._keep_better_head(self.model, self.data, self.batch_size, self.verbose)


# -------------------------------------------------------------- training
class StagewiseDistiller:
    """Stage-by-stage knowledge distillation (SSKD), with a `fit` API.

    The student is split into backbone stages 1..K and a head, the teacher
    into stages 1..K. `fit` runs K + 1 phases with `run_phases`, each with its
    own epochs and a fresh optimizer:

    * Phase k <= K is a `kdtf.Distiller` run (`phase_model(k)`): the teacher
      and the student cut after their stage k (`stage_models`), the loss
      `kdtf.losses.FeatureMSE` between the two stage-k features, i.e.
      `mean((A_k(F_S^k(x)) - F_T^k(x))^2)` with an adapter `A_k`, and
      `student_loss_weight=0` (no task loss). Stages 1..k-1 are frozen
      (`trainable = False`, so their BatchNorm runs in inference mode and
      their weights and statistics do not change), stages after k are not
      computed. Inputs only: unlabelled data can serve these phases. The
      Distiller brings the non-finite-loss guard, the folded teacher and
      the distribution strategies.
    * Phase K+1 freezes the backbone and trains the head with the task loss
      on labelled data, as a plain `keras.Model` (the student's layers) and
      `fit`. By default (`head_init`) the head's final Dense layer first gets
      a closed-form ridge fit on the frozen features, and the gradient
      epochs that follow are kept only if they lower the task loss on the
      labelled data: the adapters' BatchNorm leaves the scale of the student
      features free, and a head trained from scratch with a fixed learning
      rate depends on that scale.

    There is no loss weight to tune. The adapters (1x1 conv / dense + BN, see
    `kdtf.adapters`) live in `feature_losses[k].adapter`, not in the student.
    The teacher is frozen and always run in inference mode. Build it, the
    student and this object inside a `tf.distribute` strategy's scope, and
    `fit` there, to train on several devices or workers (pass datasets
    sharded with `kdtf.distribute.shard_by_data` for multi-worker runs).

    Args:
        teacher: a trained `keras.Model` (functional, or subclassed with
            `stage_outputs(x, training)`).
        student: the `keras.Model` to train (functional, or subclassed with
            `stage_submodels()`).
        stages: the layers ending each stage: None (default) for both
            models' `kdtf.models.stage_endpoints`, a list of names shared by
            both, or a list of `(teacher_name, student_name)` pairs.
        backbone_optimizer: optimizer of each backbone phase: a name, a
            config, or an instance (cloned for each phase). Defaults to
            "adam".
        head_optimizer: optimizer of the head phase. Defaults to "adam".
        backbone_epochs: default epochs per backbone phase (an int, or one
            int per stage). Defaults to 10.
        head_epochs: default epochs of the head phase. Defaults to 10.
        loss: the head's task loss. Defaults to
            `SparseCategoricalCrossentropy(from_logits=True)`.
        metrics: metrics of the head phase. Defaults to `["accuracy"]`.
        adapter: whether to add adapters where feature shapes differ.
        input_shape: shape of one input; needed only for subclassed models.
        compile_options: extra `keras.Model.compile` arguments of every
            phase, e.g. `{"jit_compile": True}` or `{"run_eagerly": True}`.
        init_adapters: before each backbone phase, set the adapter's
            BatchNorm scale/offset to the per-channel std/mean of the
            teacher's features on the first batch (see
            `Adapter.initialize_from_targets`), so that it starts at the
            teacher's scale. Defaults to True.
        head_init: how the head phase starts. "ridge": before training the
            head, fit its final `Dense` layer in closed form on the frozen
            features of the labelled data (ridge regression of one-hot
            labels with an unpenalised bias, the ridge strength chosen by
            generalised cross-validation, then one logit scale fitted to
            minimise the cross-entropy); after the `head_epochs` of gradient
            training, if the task loss on the labelled data is higher than
            at that starting point, the head goes back to it (before the
            last backup, so a resumed finished run restores the head kept).
            It needs a head ending in a linear `Dense` layer on `[batch, d]`
            features (`d <= MAX_RIDGE_FEATURES`) and a
            (Sparse)CategoricalCrossentropy loss with `from_logits=True`.
            "auto" (default): "ridge" when those hold, else None. None: the
            head starts from its current weights. A head phase resumed
            mid-way from a backup continues from the backed-up head (no fit,
            no fallback). After a fitted head phase, `head_init_info` holds
            the ridge `alpha`, the `logit_scale`, the labelled-data `loss`
            of the closed-form head and the `fine_tuned_loss`, and which
            head was `kept` ("closed_form" or "fine_tuned").
        fold_teacher_batchnorm: passed to each backbone phase's
            `kdtf.Distiller`. Defaults to True.

    Example:

    ```python
    sskd = kdtf.StagewiseDistiller(teacher, student, head_optimizer="adam")
    sskd.fit(x_train, y_train, epochs_per_stage=5, head_epochs=5,
             x_unlabeled=x_extra, checkpoint_dir="runs/sskd")
    student = sskd.student
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        stages=None,
        backbone_optimizer="adam",
        head_optimizer="adam",
        backbone_epochs=10,
        head_epochs=10,
        loss=None,
        metrics=None,
        adapter=True,
        input_shape=None,
        compile_options=None,
        init_adapters=True,
        head_init="auto",
        fold_teacher_batchnorm=True,
    ):
        _check_model("teacher", teacher)
        _check_model("student", student)
        self.teacher = teacher
        self.student = student
        self.teacher_stages, self.student_stages = self._stage_pairs(stages)
        self.num_stages = len(self.student_stages)
        self.backbone_optimizer = _optimizer_spec("backbone_optimizer", backbone_optimizer)
        self.head_optimizer = _optimizer_spec("head_optimizer", head_optimizer)
        self.backbone_epochs = self._epochs_per_stage(backbone_epochs, "backbone_epochs")
        self.head_epochs = _check_epochs("head_epochs", head_epochs)
        self.loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.metrics = list(metrics) if metrics is not None else ["accuracy"]
        if compile_options is not None and not isinstance(compile_options, dict):
            raise TypeError(
                "`compile_options` must be a dict of keras.Model.compile "
                f"arguments; got {compile_options!r}."
            )
        self.compile_options = dict(compile_options or {})
        self.init_adapters = bool(init_adapters)
        self.fold_teacher_batchnorm = fold_teacher_batchnorm
        if input_shape is None:
            for model in (student, teacher):
                if _is_functional(model):
                    input_shape = tuple(_single_input(model).shape[1:])
                    break
        self.input_shape = input_shape
        # Functional views: each stage's output, named, for the Distiller.
        self._teacher_inputs, self._teacher_views = self._teacher_graph()
        self._student_inputs, self._student_views, self._student_output = self._student_graph()
        self.feature_losses = []
        for k in range(1, self.num_stages + 1):
            (t_name, t_out), (s_name, s_out) = self._teacher_views[k - 1], self._student_views[k - 1]
            loss_k = FeatureMSE(t_name, s_name, adapter=adapter, name=f"sskd_stage{k}")
            loss_k.build_adapter(tuple(t_out.shape[1:]), tuple(s_out.shape[1:]))
            self.feature_losses.append(loss_k)
        self.head_init = self._check_head_init(head_init)
        # Filled by each head phase that starts with a closed-form fit.
        self.head_init_info = None
        self._closed_form = None

    @property
    def adapters(self):
        """The adapters `A_1..A_K` (None where shapes already match)."""
        return [loss.adapter for loss in self.feature_losses]

    # ------------------------------------------------------------ set-up
    def _stage_pairs(self, stages):
        if stages is None:
            t_names = default_stages(self.teacher)
            s_names = default_stages(self.student)
            if len(t_names) != len(s_names):
                raise ValueError(
                    f"teacher has {len(t_names)} stages {t_names} and student "
                    f"{len(s_names)} {s_names}; pass `stages` as a list of "
                    "(teacher_name, student_name) pairs."
                )
            return list(t_names), list(s_names)
        return split_stages(stages)

    def _need_input_shape(self):
        if self.input_shape is None:
            raise ValueError(
                "`input_shape` is required for subclassed models (to infer "
                "the stage feature shapes)."
            )
        return keras.Input(self.input_shape)

    def _teacher_graph(self):
        """`(inputs, [(layer name, stage-k output tensor)])` of the teacher."""
        if _is_functional(self.teacher):
            return _single_input(self.teacher), [(n, _layer_output(self.teacher, n))
                                         for n in self.teacher_stages]
        views = stage_models(self.teacher, self.teacher_stages)  # checks the names
        inputs = self._need_input_shape()
        out = []
        for name, view in zip(self.teacher_stages, views):
            layer = keras.layers.Identity(name=f"{self.teacher.name}_{name}_out")
            out.append((layer.name, layer(view(inputs))))
        return inputs, out

    def _student_graph(self):
        """`(inputs, [(layer name, stage-k tensor)], output)` of the student."""
        if _is_functional(self.student):
            views = [(n, _layer_output(self.student, n)) for n in self.student_stages]
            return _single_input(self.student), views, self.student.outputs[0]
        stages, head = student_parts(self.student)
        if len(stages) != self.num_stages:
            raise ValueError(
                f"student has {len(stages)} stages but {self.num_stages} stage "
                "pairs were given."
            )
        inputs = self._need_input_shape()
        h, views = inputs, []
        for k, stage in enumerate(stages, 1):
            layer = keras.layers.Identity(name=f"{self.student.name}_stage{k}_out")
            h = layer(stage(h))
            views.append((layer.name, h))
        return inputs, views, head(h)

    def _check_head_init(self, head_init):
        """Validates `head_init`; returns "ridge" or None."""
        if head_init not in HEAD_INITS:
            raise ValueError(
                f"`head_init` must be one of {list(HEAD_INITS)}; got "
                f"{head_init!r}."
            )
        if head_init is None:
            return None
        reason = self._ridge_unsupported()
        if reason is None:
            return "ridge"
        if head_init == "ridge":
            raise ValueError(
                f"head_init='ridge' cannot be used: {reason}. Use "
                "head_init=None (or 'auto') to train the head from its "
                "initial weights."
            )
        return None

    def _ridge_unsupported(self):
        """Why the closed-form head fit does not apply, or None if it does."""
        found = _final_dense(self._student_output, self._student_inputs)
        if found is None:
            return (
                "the head does not end in a Dense layer fed by a single "
                "tensor"
            )
        dense, _ = found
        if getattr(dense, "activation", None) is not keras.activations.linear:
            return (
                f"the head's final Dense layer {dense.name!r} has activation "
                f"{getattr(dense.activation, '__name__', dense.activation)!r}; "
                "it must output logits (activation=None)"
            )
        if not dense.use_bias:
            return f"the head's final Dense layer {dense.name!r} has no bias"
        if _target_kind(self.loss) is None:
            return (
                f"the loss {type(self.loss).__name__} is not a Keras "
                "SparseCategoricalCrossentropy or CategoricalCrossentropy "
                "with from_logits=True"
            )
        if dense.built and int(dense.kernel.shape[0]) > MAX_RIDGE_FEATURES:
            return (
                f"the head's final Dense layer has {int(dense.kernel.shape[0])} "
                f"inputs (> MAX_RIDGE_FEATURES = {MAX_RIDGE_FEATURES})"
            )
        return None

    def _epochs_per_stage(self, epochs, arg):
        if isinstance(epochs, (list, tuple)):
            if len(epochs) != self.num_stages:
                raise ValueError(
                    f"`{arg}` needs one value per stage ({self.num_stages}); "
                    f"got {list(epochs)}."
                )
            return [_check_epochs(arg, e) for e in epochs]
        return [_check_epochs(arg, epochs)] * self.num_stages

    def _prefix(self, k, name=None):
        """The student from its input to the end of stage k (sharing its layers)."""
        return keras.Model(self._student_inputs, self._student_views[k - 1][1],
                           name=name or f"{self.student.name}_to_stage{k}")

    def _freeze_stages(self, k):
        """Stages 1..k non-trainable (BatchNorm in inference mode)."""
        if k:
            for layer in _all_layers(self._prefix(k)):
                layer.trainable = False

    def phase_model(self, phase):
        """The compiled `keras.Model` trained in `phase` (1..K backbone, K+1 head).

        Phase k <= K is a `kdtf.Distiller` of the stage-k prefixes of the
        teacher and the student with the stage-k `FeatureMSE` and no task
        loss; phase K+1 is the student as a plain model named "sskd_head".
        Building it makes the stages it keeps frozen non-trainable (`fit`
        puts every `trainable` flag back afterwards).

        Args:
            phase: 1-based phase index.

        Returns:
            A compiled `keras.Model`; its layers are exactly what the phase
            computes.
        """
        from kdtf import distribute
        from kdtf.distiller import Distiller

        if not 1 <= phase <= self.num_stages + 1:
            raise ValueError(
                f"`phase` must be in [1, {self.num_stages + 1}]; got {phase}."
            )
        if phase <= self.num_stages:
            self._freeze_stages(phase - 1)
            t_name, t_out = self._teacher_views[phase - 1]
            teacher = keras.Model(self._teacher_inputs, t_out,
                                  name=f"{self.teacher.name}_to_{t_name}")
            model = Distiller(
                teacher, self._prefix(phase), self.feature_losses[phase - 1],
                student_loss_weight=0.0, fold_teacher_batchnorm=self.fold_teacher_batchnorm,
                name=f"sskd_phase{phase}",
            )
            model.compile(optimizer=_make_optimizer(self.backbone_optimizer),
                          **self.compile_options)
            return model
        self._freeze_stages(self.num_stages)
        model = keras.Model(self._student_inputs, self._student_output, name="sskd_head")
        if keras.backend.backend() == "tensorflow":
            model = distribute.enable_multi_worker(model)
        model.compile(optimizer=_make_optimizer(self.head_optimizer), loss=self.loss,
                      metrics=self.metrics, **self.compile_options)
        return model

    # -------------------------------------------------------------- fit
    def fit(
        self,
        x,
        y=None,
        epochs_per_stage=None,
        head_epochs=None,
        x_unlabeled=None,
        validation_data=None,
        checkpoint_dir=None,
        batch_size=32,
        callbacks=None,
        verbose="auto",
        backbone_data=None,
    ):
        """Runs the K backbone phases, then the head phase (`run_phases`).

        Args:
            x: inputs (array), or a `tf.data.Dataset` of `(x, y)` batches
                (or of `x` batches when only backbone phases run).
            y: labels for array `x`; needed for the head phase only.
            epochs_per_stage: epochs of each backbone phase (int or one per
                stage); defaults to the constructor's `backbone_epochs`.
            head_epochs: epochs of the head phase; defaults to the
                constructor's `head_epochs`. 0 skips the head.
            x_unlabeled: extra inputs (array or dataset of input batches)
                used by the backbone phases only.
            validation_data: `(x_val, y_val)` arrays or a dataset of
                `(x, y)` batches; backbone phases report their feature loss
                (`distillation_loss`) on it, the head phase its loss and
                metrics.
            checkpoint_dir: directory of each phase's
                `kdtf.callbacks.BackupAndRestore` backups (after every
                epoch); a rerun restores finished phases without training
                them and resumes the interrupted one at its next epoch.
            batch_size: batch size for array inputs.
            callbacks: Keras callbacks passed to every phase's `fit`.
            verbose: Keras verbosity.
            backbone_data: optional inputs of the backbone phases (an array
                or a dataset of input batches), replacing `x` and
                `x_unlabeled` there.

        Returns:
            A dict mapping phase names ("stage1", ..., "head") to the Keras
            history dicts of the phases trained by this call.
        """
        epochs = (
            self.backbone_epochs
            if epochs_per_stage is None
            else self._epochs_per_stage(epochs_per_stage, "epochs_per_stage")
        )
        head_epochs = self.head_epochs if head_epochs is None else _check_epochs(
            "head_epochs", head_epochs
        )
        if not _is_dataset(x):
            x = np.asarray(x)
            if y is None and head_epochs > 0:
                raise ValueError(
                    "`y` (labels) is required for the head phase; pass y, or "
                    "head_epochs=0 to train only the backbone."
                )
        inputs = (_backbone_inputs(x, x_unlabeled, batch_size) if backbone_data is None
                  else backbone_data)
        sized = {"shuffle": False} if _is_dataset(inputs) else {"batch_size": batch_size}
        phases = []
        for k in range(1, self.num_stages + 1):
            phases.append(Phase(
                self.student_stages[k - 1], epochs[k - 1],
                build=lambda k=k: self.phase_model(k),
                fit_args={"x": inputs, "validation_data": validation_data, **sized},
                on_start=(lambda k=k: self._init_adapter(k, inputs)) if self.init_adapters else None,
                header=f"stage {k}: student {self.student_stages[k - 1]!r} -> teacher "
                       f"{self.teacher_stages[k - 1]!r}",
            ))
        labelled = x if _is_dataset(x) else (x, np.asarray(y) if y is not None else None)
        head_fit = {"x": x, "shuffle": False} if _is_dataset(x) else {"x": x, "y": labelled[1], "batch_size": batch_size}
        self._closed_form = None
        ridge = self.head_init == "ridge"
        phases.append(Phase(
            "head", head_epochs, build=lambda: self.phase_model(self.num_stages + 1),
            fit_args={**head_fit, "validation_data": validation_data},
            on_start=(lambda: self._fit_head_init(labelled, batch_size, verbose)) if ridge else None,
            callbacks=(lambda model: [_KeepBetterHead(self, head_epochs, labelled, batch_size,
                                                      verbose)]) if ridge else None,
            header="head (backbone frozen, task loss on labels)",
        ))
        snapshot = [(layer, layer.trainable)
                    for layer in _all_layers(self.student) + _all_layers(self.teacher)]
        try:
            return run_phases(phases, checkpoint_dir, callbacks, verbose)
        finally:
            _restore_trainable(snapshot)

    # ------------------------------------------------- closed-form head
    def _fit_head_init(self, data, batch_size, verbose):
        """Sets the head's final Dense layer by ridge regression + a logit scale.

        Ridge regression of one-hot labels on the frozen features `h` (mean
        removed; the bias is not penalised), with penalty `alpha * mean
        eigenvalue of the centred Gram matrix` and `alpha` chosen on a grid
        by generalised cross-validation, then the logits are multiplied by
        the scalar that minimises the mean cross-entropy (least-squares
        outputs are ~12-30x too small to be good logits). Both steps are
        invariant to the scale of `h`, and to the order of the batches.
        Streams over the data (memory O(d^2), not O(n d)).
        """
        dense, features = _final_dense(self._student_output, self._student_inputs)
        kind = _target_kind(self.loss)
        num_classes = int(dense.units)
        stats = None
        for xb, yb in _labelled_batches(data, batch_size):
            h = _as_2d(features(xb, training=False))
            t = _targets(yb, kind, num_classes)
            if stats is None:
                if h.shape[1] > MAX_RIDGE_FEATURES:
                    raise ValueError(
                        f"head_init='ridge': the head's final Dense layer has "
                        f"{h.shape[1]} input features (> MAX_RIDGE_FEATURES = "
                        f"{MAX_RIDGE_FEATURES}); use head_init=None."
                    )
                stats = _GramStats(h.shape[1], num_classes)
            stats.add(h, t)
        if stats is None or stats.n < 2:
            raise ValueError("head_init='ridge' needs at least 2 labelled examples.")
        kernel, bias, alpha = _ridge_gcv(stats)
        logits, targets = [], []
        for xb, yb in _labelled_batches(data, batch_size):
            logits.append(_as_2d(features(xb, training=False)) @ kernel + bias)
            targets.append(_targets(yb, kind, num_classes))
        scale = _logit_scale(np.concatenate(logits), np.concatenate(targets))
        dense.kernel.assign((scale * kernel).astype(dense.kernel.dtype))
        dense.bias.assign((scale * bias).astype(dense.bias.dtype))
        head = keras.Model(self._student_inputs, self._student_output)
        loss = self._head_loss(head, data, batch_size)
        self.head_init_info = {
            "alpha": alpha, "logit_scale": scale, "loss": loss,
            "fine_tuned_loss": None, "kept": "closed_form",
        }
        if verbose:
            print(
                f"Head: closed-form start (ridge alpha {alpha:g}, logit scale "
                f"{scale:.3g}): loss {loss:.4f} on the labelled data"
            )
        self._closed_form = [keras.ops.convert_to_numpy(w).copy() for w in head.weights]

    def _head_loss(self, model, data, batch_size):
        """Mean task loss of `model` (inference mode) on labelled `data`."""
        total, count = 0.0, 0
        for xb, yb in _labelled_batches(data, batch_size):
            logits = model(xb, training=False)
            n = int(np.shape(logits)[0])
            total += float(self.loss(yb, logits)) * n
            count += n
        return total / max(count, 1)

    def _keep_better_head(self, model, data, batch_size, verbose):
        """Puts the closed-form head back if training raised the task loss."""
        info, start = self.head_init_info, self._closed_form
        if start is None:  # resumed mid-phase: no closed-form start to compare
            return
        tuned = self._head_loss(model, data, batch_size)
        info["fine_tuned_loss"] = tuned
        if tuned <= info["loss"]:
            info["kept"] = "fine_tuned"
            return
        for variable, value in zip(model.weights, start):
            variable.assign(value)
        if verbose:
            print(
                f"Head: training raised the loss on the labelled data "
                f"({info['loss']:.4f} -> {tuned:.4f}); keeping the "
                "closed-form head."
            )

    def _init_adapter(self, k, inputs):
        """Starts adapter k at the moments of the teacher's stage-k features."""
        adapter = self.feature_losses[k - 1].adapter
        if adapter is None:
            return
        batch = next(iter(inputs)) if _is_dataset(inputs) else inputs[:256]
        t_name, t_out = self._teacher_views[k - 1]
        teacher = keras.Model(self._teacher_inputs, t_out)
        adapter.initialize_from_targets(teacher(_first(batch), training=False))


# ---------------------------------------------------------------- helpers
HEAD_INITS = ("auto", "ridge", None)
"""Valid values of `StagewiseDistiller(head_init=...)`."""

MAX_RIDGE_FEATURES = 8192
"""Largest input width of the head's final Dense layer fitted in closed form
(the fit holds a d x d float64 matrix and eigendecomposes it)."""

_RIDGE_ALPHAS = 10.0 ** np.arange(-6.0, 3.0)


def _final_dense(output, inputs):
    """`(dense, features)` with `output == dense(features(inputs))`, or None.

    `output` is a KerasTensor of a functional graph on `inputs`; `features`
    is a functional model from `inputs` to the Dense layer's input. The head
    may end in a Dense layer, or in a Sequential or functional model ending
    in one.
    """
    operation, node_index, _ = output._keras_history
    args = operation._inbound_nodes[node_index].arguments.keras_tensors
    if len(args) != 1:
        return None
    if isinstance(operation, keras.layers.Dense):
        return operation, keras.Model(inputs, args[0])
    if isinstance(operation, keras.Sequential):
        layers = list(operation.layers)
        if not layers or not isinstance(layers[-1], keras.layers.Dense):
            return None
        h = args[0]
        for layer in layers[:-1]:
            h = layer(h)
        return layers[-1], keras.Model(inputs, h)
    if _is_functional(operation) and len(operation.outputs) == 1:
        inner = _final_dense(operation.outputs[0], operation.inputs)
        if inner is None:
            return None
        return inner[0], keras.Model(inputs, inner[1](args[0]))
    return None


def _target_kind(loss):
    """"sparse" / "one_hot" for a from-logits cross-entropy loss, else None."""
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        kind = "sparse"
    elif isinstance(loss, keras.losses.CategoricalCrossentropy):
        kind = "one_hot"
    else:
        return None
    return kind if loss.get_config().get("from_logits") else None


def _targets(y, kind, num_classes):
    """One-hot float64 targets `[B, C]` from a batch of labels."""
    y = keras.ops.convert_to_numpy(y)
    if kind == "one_hot":
        y = np.asarray(y, dtype="float64").reshape(len(y), -1)
        if y.shape[1] != num_classes:
            raise ValueError(
                f"head_init='ridge': one-hot labels have {y.shape[1]} columns "
                f"but the head has {num_classes} outputs."
            )
        return y
    y = np.asarray(y).reshape(-1)
    if y.size and (y.min() < 0 or y.max() >= num_classes or
                   not np.all(np.equal(np.mod(y, 1), 0))):
        raise ValueError(
            f"head_init='ridge': labels must be integers in [0, {num_classes}); "
            f"got values in [{y.min()}, {y.max()}]."
        )
    return np.eye(num_classes)[y.astype("int64")]


def _as_2d(h):
    h = keras.ops.convert_to_numpy(h)
    if h.ndim != 2:
        raise ValueError(
            "head_init='ridge': the head's final Dense layer must read "
            f"[batch, features] inputs; got shape {h.shape}. Use "
            "head_init=None."
        )
    return h.astype("float64")


class _GramStats:
    """Running sums for least squares: n, sum h, H^T H, H^T Y, sum y, Y^T Y."""

    def __init__(self, d, c):
        self.n = 0
        self.h = np.zeros(d)
        self.hh = np.zeros((d, d))
        self.hy = np.zeros((d, c))
        self.y = np.zeros(c)
        self.yy = 0.0

    def add(self, h, y):
        self.n += len(h)
        self.h += h.sum(0)
        self.hh += h.T @ h
        self.hy += h.T @ y
        self.y += y.sum(0)
        self.yy += float((y * y).sum())


def _ridge_gcv(stats):
    """Ridge regression with an unpenalised bias; alpha by GCV.

    Returns:
        `(kernel [d, C], bias [C], alpha)`, float32 arrays; the penalty is
        `alpha` times the mean eigenvalue of the centred Gram matrix, so the
        fit is invariant to the scale of the features.
    """
    n = stats.n
    mu, y_mean = stats.h / n, stats.y / n
    gram = stats.hh - n * np.outer(mu, mu)
    cross = stats.hy - n * np.outer(mu, y_mean)
    yy = stats.yy - n * float(y_mean @ y_mean)
    evals, evecs = np.linalg.eigh((gram + gram.T) / 2)
    evals = np.clip(evals, 0.0, None)
    unit = evals.mean()
    d = len(evals)
    if unit <= 0:  # constant features: predict the class frequencies
        return (np.zeros((d, len(y_mean)), "float32"), y_mean.astype("float32"),
                float(_RIDGE_ALPHAS[-1]))
    proj = evecs.T @ cross  # [d, C]
    proj2 = (proj ** 2).sum(1)  # [d]
    best = None
    for alpha in _RIDGE_ALPHAS:
        lam = alpha * unit
        rss = max(yy - float(np.sum(proj2 * (evals + 2 * lam) / (evals + lam) ** 2)), 0.0)
        dof = float(np.sum(evals / (evals + lam))) + 1.0  # + the bias
        if dof >= n:
            continue
        gcv = rss / (n * (1.0 - dof / n) ** 2)
        if best is None or gcv < best[0]:
            best = (gcv, alpha, lam)
    if best is None:  # fewer examples than features at every alpha tried
        alpha = float(_RIDGE_ALPHAS[-1])
        lam = alpha * unit
    else:
        _, alpha, lam = best
    kernel = evecs @ (proj / (evals + lam)[:, None])
    bias = y_mean - mu @ kernel
    return kernel.astype("float32"), bias.astype("float32"), float(alpha)


def _logit_scale(logits, targets, low=1e-3, high=1e3, steps=60):
    """The `a > 0` minimising the mean cross-entropy of `a * logits`.

    The loss is convex in `a`; bisection on the sign of its derivative
    `mean(softmax(a z) . z - y . z)` over `log a` in `[log low, log high]`.
    """
    z = np.asarray(logits, "float64")
    target_logit = (targets * z).sum(1)

    def slope(a):
        s = a * z
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return float(np.mean((p * z).sum(1) - target_logit))

    lo, hi = np.log(low), np.log(high)
    if slope(high) <= 0:
        return float(high)
    if slope(low) >= 0:
        return float(low)
    for _ in range(steps):
        mid = (lo + hi) / 2
        if slope(np.exp(mid)) > 0:
            hi = mid
        else:
            lo = mid
    return float(np.exp((lo + hi) / 2))


def _is_dataset(x):
    if x is None or isinstance(x, np.ndarray):
        return False
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)


def _first(element):
    """The inputs of a batch that may be `(x, y, ...)`."""
    return element[0] if isinstance(element, (tuple, list)) else element


def _backbone_inputs(x, x_unlabeled, batch_size):
    """The backbone phases' data: `x`'s inputs (labels dropped), then `x_unlabeled`."""
    if not _is_dataset(x) and not _is_dataset(x_unlabeled):
        if isinstance(x_unlabeled, (list, tuple)):
            raise TypeError("`x_unlabeled` must be one array or a tf.data.Dataset.")
        return x if x_unlabeled is None else np.concatenate([x, np.asarray(x_unlabeled)])
    import tensorflow as tf

    def dataset(data):
        if _is_dataset(data):
            return data.map(lambda *element: element[0])
        return tf.data.Dataset.from_tensor_slices(np.asarray(data)).batch(batch_size)

    out = dataset(x)
    return out if x_unlabeled is None else out.concatenate(dataset(x_unlabeled))


def _labelled_batches(data, batch_size):
    """Yields `(x, y)` NumPy batches of a dataset of `(x, y)` or of `(x, y)` arrays."""
    if _is_dataset(data):
        for element in data:
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise ValueError("The head phase needs a dataset of (x, y) batches.")
            yield np.asarray(element[0]), np.asarray(element[1])
        return
    x, y = data
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def _all_layers(model):
    return list(model._flatten_layers(include_self=True, recursive=True))


def _restore_trainable(snapshot):
    for layer, flag in snapshot:
        layer.trainable = flag
    # Re-assert children after parents (the setter recurses).
    for layer, flag in snapshot:
        if layer.trainable != flag:
            layer.trainable = flag


def _check_epochs(arg, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{arg}` must be an int >= 0; got {value!r}.")
    return int(value)


def _optimizer_spec(arg, optimizer):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return keras.saving.serialize_keras_object(optimizer)
    if isinstance(optimizer, (str, dict)) or callable(optimizer):
        return optimizer
    raise TypeError(
        f"`{arg}` must be an optimizer name, config, instance or factory; got "
        f"{optimizer!r}."
    )


def _make_optimizer(spec):
    """A fresh optimizer for one phase."""
    if isinstance(spec, dict):
        return keras.saving.deserialize_keras_object(spec)
    if isinstance(spec, str):
        return keras.optimizers.get(spec)
    return spec()


# ------------------------------------------------------------- app entry
def middle_stage(model):
    """The middle stage of a model: stage `(K + 1) // 2` of its K stages.

    The usual FitNets hint layer (stage 2 of 3, stage 1 of 2).

    Args:
        model: a model with stage endpoints (`kdtf.models.stage_endpoints`).

    Returns:
        A layer name.

    Example:

    >>> middle_stage(kdtf.models.get("mnist1d_cnn"))
    'stage2'
    """
    names = default_stages(model)
    return names[(len(names) + 1) // 2 - 1]


def run_sskd(
    teacher,
    student,
    x_train,
    y_train,
    x_unlabeled=None,
    validation_data=None,
    epochs_per_stage=10,
    head_epochs=10,
    batch_size=128,
    learning_rate=3e-3,
    stages=None,
    checkpoint_dir=None,
    callbacks=None,
    verbose=2,
    return_history=False,
    head_init="auto",
    seed=None,
):
    """Trains `student` from `teacher` with SSKD; the entry point of the apps.

    Each phase uses Adam with a cosine decay of `learning_rate` to 0 over the
    phase. The backbone phases see `x_train` plus `x_unlabeled` (inputs
    only); the head phase sees the labelled `(x_train, y_train)`. The data
    go through `kdtf.data.make_dataset` (shuffled with `seed`, the same on
    every worker) and `kdtf.distribute.shard_by_data`, so that the same call
    trains on one device or, inside a `tf.distribute` strategy's scope, on
    several devices or workers with the same global batches.

    Args:
        teacher: a trained `keras.Model` with stage endpoints.
        student: the `keras.Model` to train (modified in place).
        x_train: labelled inputs.
        y_train: their integer labels.
        x_unlabeled: optional extra inputs for the backbone phases (e.g.
            `splits.x_unlabeled` after `Splits.label_budget`).
        validation_data: optional `(x_val, y_val)`.
        epochs_per_stage: epochs of each backbone phase (int or list).
        head_epochs: epochs of the head phase.
        batch_size: (global) batch size of every phase.
        learning_rate: peak learning rate of every phase.
        stages: stage pairs (see `StagewiseDistiller`); default: both models'
            `kdtf.models.stage_endpoints`.
        checkpoint_dir: optional directory for resumable backups.
        callbacks: Keras callbacks passed to every phase's `fit`.
        verbose: Keras verbosity.
        return_history: also return the phases' histories.
        head_init: how the head phase starts (see `StagewiseDistiller`):
            "auto" (default) fits the head's final Dense layer in closed
            form first, so the head does not depend on the scale of the
            frozen features; None trains it from its initial weights.
        seed: seed of the data order; None draws it from NumPy's global
            generator (seeded by `keras.utils.set_random_seed`).

    Returns:
        The trained student (the same object as `student`); with
        `return_history=True`, `(student, histories)` where `histories` maps
        phase names ("stage1", ..., "head") to Keras history dicts.

    Example:

    ```python
    splits = kdtf.data.load("mnist1d").label_budget(0.1, seed=0)
    student = kdtf.stagewise.run_sskd(
        teacher, kdtf.models.get("mnist1d_cnn_small"),
        splits.x_train, splits.y_train, x_unlabeled=splits.x_unlabeled,
        validation_data=(splits.x_val, splits.y_val))
    ```
    """
    from kdtf import distribute
    from kdtf.data import make_dataset

    x_train = np.asarray(x_train)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    inputs = x_train if x_unlabeled is None else np.concatenate([x_train, np.asarray(x_unlabeled)])
    backbone = distribute.shard_by_data(
        make_dataset(inputs, batch_size=batch_size, shuffle=True, seed=seed))
    labelled = distribute.shard_by_data(
        make_dataset(x_train, np.asarray(y_train), batch_size=batch_size, shuffle=True, seed=seed))
    if validation_data is not None and not _is_dataset(validation_data):
        validation_data = distribute.shard_by_data(
            make_dataset(*validation_data, batch_size=512))
    epochs_list = (
        list(epochs_per_stage)
        if isinstance(epochs_per_stage, (list, tuple))
        else [epochs_per_stage]
    )

    def adam(steps):
        from kdtf.optimizers import cosine_adam

        return keras.saving.serialize_keras_object(cosine_adam(learning_rate, steps))

    sskd = StagewiseDistiller(
        teacher,
        student,
        stages=stages,
        backbone_optimizer=adam(max(epochs_list) * -(-len(inputs) // batch_size)),
        head_optimizer=adam(head_epochs * -(-len(x_train) // batch_size)),
        backbone_epochs=epochs_per_stage,
        head_epochs=head_epochs,
        head_init=head_init,
    )
    histories = sskd.fit(
        labelled,
        x_unlabeled=None,
        validation_data=validation_data,
        checkpoint_dir=checkpoint_dir,
        batch_size=batch_size,
        callbacks=callbacks,
        verbose=verbose,
        backbone_data=backbone,
    )
    return (student, histories) if return_history else student
