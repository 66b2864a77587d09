"""The method registry: every distillation method kdtf's runs know, in one table.

A `Method` names its loss (or training procedure), the settings it adds to a
run, and how it builds the `Distiller` arguments from a run's settings. The
run pipeline (`pipeline.experiment`, beside the library), the apps' `--method` choices and flags, the
study tables and the docs all read `REGISTRY`, so adding a method is one loss
file in `kdtf/losses/`, its test, and one `register(Method(...))` here:

```python
register(Method(
    "dkd", "DKD: KD decoupled into target and non-target terms (Zhao et al. 2022)",
    settings=(Setting("dkd_beta", 8.0, "Weight of DKD's non-target term.", lower_bound=0.0),),
    build=lambda cfg, ctx: {"distillation_losses": losses.DKD(beta=cfg.dkd_beta)},
))
```

`build(cfg, ctx)` gets the run's settings (a `pipeline.experiment.RunConfig`,
whose fields include every registered `Setting`) and a `BuildContext` with the
models and the pipeline's services, and returns keyword arguments of
`kdtf.Distiller` (`distillation_losses`, and optionally
`distillation_loss_weights`, `sampler`, `synthetic_loss_weight`,
`synthetic_ratio`); `student_loss_weight` and `seed` come from the run.
"""
import dataclasses
from typing import Any, Callable, Optional

from kdtf import losses


@dataclasses.dataclass(frozen=True)
class Setting:
    """A run setting a method adds (a `RunConfig` field and an app flag).

    Args:
        name: the field and flag name, prefixed by the method's name
            (`dkd_beta`) unless shared.
        default: its default (its type is the setting's type).
        help: one sentence for `--help` and the docs.
        choices: allowed values, for a string setting.
        lower_bound: least allowed value, for a number.
        upper_bound: largest allowed value, for a number.
    """

    name: str
    default: Any
    help: str
    choices: Optional[tuple] = None
    lower_bound: Optional[float] = None
    upper_bound: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a method's `build` may use besides the run's settings.

    Attributes:
        teacher: the teacher `keras.Model`.
        student: the student `keras.Model`.
        steps_per_epoch: optimizer steps per training epoch.
        sampler: `sampler()` returns the run's fitted synthetic-input sampler.
        stage_pairs: `stage_pairs()` returns `(teacher_layers, student_layers)`
            from the run's `stages` setting (validated against both models),
            or None when the setting is empty.
        middle_stage: `middle_stage(model)` names a model's middle stage.
        num_examples: the number of training examples, for losses with
            per-example state (CRD's memory bank); None when the pipeline
            does not give it (CRD's build then refuses).
    """

    teacher: Any
    student: Any
    steps_per_epoch: int
    sampler: Callable
    stage_pairs: Callable
    middle_stage: Callable
    num_examples: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Method:
    """One entry of the registry.

    Args:
        name: the `--method` value.
        summary: one line for `--help`, study tables and the docs.
        build: `build(cfg, ctx)` -> `kdtf.Distiller` keyword arguments; None
            for methods that are not one Distiller run (`trainer`).
        settings: the `Setting`s the method adds.
        trainer: "distiller" (one `kdtf.Distiller` run), "plain" (the
            student alone on labels) or "sskd" (stage-by-stage phases).
        label: the row name in result tables.
        uses_stages: whether the method reads the run's `stages` setting
            (stage pairs of the two models); a run's stage errors then say
            which `--stages` are valid.
        defaults: the method's own defaults of settings that several methods
            share (e.g. `{"temperature": 1.0}`): a run that leaves such a
            setting unset gets the method's value, or else the run's default.
    """

    name: str
    summary: str
    build: Optional[Callable] = None
    settings: tuple = ()
    trainer: str = "distiller"
    label: str = ""
    uses_stages: bool = False
    defaults: Any = dataclasses.field(default_factory=dict)


REGISTRY = {}


def register(method):
    """Adds `method` to `REGISTRY`; its name and setting names must be new."""
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is registered already.")
    taken = {s.name for m in REGISTRY.values() for s in m.settings}
    clash = sorted(taken & {s.name for s in method.settings})
    if clash:
        raise ValueError(f"method {method.name!r}: settings {clash} are registered already.")
    if method.trainer not in ("distiller", "plain", "sskd"):
        raise ValueError(f"method {method.name!r}: unknown trainer {method.trainer!r}.")
    if method.trainer == "distiller" and method.build is None:
        raise ValueError(f"method {method.name!r}: a distiller method needs `build`.")
    REGISTRY[method.name] = method
    return method


def get(name):
    """The `Method` called `name`; a ValueError lists the valid names."""
    if name not in REGISTRY:
        raise ValueError(f"method: unknown value {name!r}; valid values: {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def names():
    """Every registered method name, in registration order."""
    return tuple(REGISTRY)


def settings():
    """Every setting the registered methods add, in registration order."""
    return tuple(s for m in REGISTRY.values() for s in m.settings)


def _kd(cfg, ctx):
    return {"distillation_losses": losses.KD(
        temperature=cfg.temperature, logit_standardization=cfg.logit_standardization)}


def _extracurricular(cfg, ctx):
    return {"distillation_losses": losses.KD(temperature=cfg.temperature), "sampler": ctx.sampler(),
            "synthetic_loss_weight": cfg.synthetic_loss_weight,
            "synthetic_ratio": cfg.synthetic_ratio}


def _fitnets(cfg, ctx):
    names = ctx.stage_pairs()
    if names is None:
        pair = (ctx.middle_stage(ctx.teacher), ctx.middle_stage(ctx.student))
    elif len(names[0]) == 1:
        pair = (names[0][0], names[1][0])
    else:
        raise ValueError(f"stages: fitnets matches one stage; got {cfg.stages!r}.")
    return {"distillation_losses": [losses.FeatureMSE(*pair)],
            "distillation_loss_weights": [cfg.feature_weight]}


def _at(cfg, ctx):
    names = ctx.stage_pairs()
    if names is None:
        from kdtf import stagewise

        names = stagewise.default_stages(ctx.teacher), stagewise.default_stages(ctx.student)
        if len(names[0]) != len(names[1]):
            raise ValueError(
                f"stages: at pairs the models' stages one to one, but the teacher has "
                f"{len(names[0])} ({', '.join(names[0])}) and the student {len(names[1])} "
                f"({', '.join(names[1])}); name the pairs, e.g. --stages=stage2:stage1.")
    pairs = list(zip(*names))
    return {"distillation_losses": [losses.AT(t, s, name=f"at_{s}") for t, s in pairs],
            "distillation_loss_weights": [cfg.at_weight] * len(pairs)}


# The penultimate (pooled) layer of kdtf zoo models, RKD's and PKT's embedding.
_PENULTIMATE = "features"


register(Method("none", "ERM: the student on labels alone, no teacher", trainer="plain",
                label="student, ERM (labels only)"))
register(Method(
    "kd", "KD: Hinton's softened-logit KL (Hinton et al. 2015)", _kd,
    settings=(Setting("logit_standardization", False,
                      "With --method=kd, dkd or dist: Z-score each example's logits before the "
                      "softmax (Sun et al. 2024); --temperature is then the base temperature. "
                      "With --method=kd the temperature and --student_loss_weight then default "
                      "to the paper's 2 and 0.1 (KD weight 9)."),),
    label="student, KD"))
register(Method(
    "dist", "DIST: Pearson inter- and intra-class relations of softened outputs (Huang et al. 2022)",
    lambda cfg, ctx: {"distillation_losses": losses.DIST(
        temperature=cfg.temperature, global_batch=cfg.dist_global_batch,
        logit_standardization=cfg.logit_standardization)},
    settings=(Setting("dist_global_batch", False,
                      "With --method=dist under a strategy: DIST's intra-class correlations over "
                      "the global batch (one all-gather per step) instead of per replica."),),
    label="student, DIST"))
register(Method(
    "dkd", "DKD: KD decoupled into target and non-target terms (Zhao et al. 2022)",
    lambda cfg, ctx: {"distillation_losses": losses.DKD(
        alpha=cfg.dkd_alpha, beta=cfg.dkd_beta, temperature=cfg.temperature,
        warmup_steps=int(round(cfg.dkd_warmup_epochs * ctx.steps_per_epoch)),
        logit_standardization=cfg.logit_standardization)},
    settings=(
        Setting("dkd_alpha", 1.0, "Weight of DKD's target-class term.", lower_bound=0.0),
        Setting("dkd_beta", 8.0, "Weight of DKD's non-target-class term (the paper tunes it "
                "per dataset; 8 is its CIFAR-100 value).", lower_bound=0.0),
        Setting("dkd_warmup_epochs", 5.0, "Epochs over which DKD's loss grows linearly from 0 "
                "(the paper: 20 of 240).", lower_bound=0.0),
    ),
    label="student, DKD"))
register(Method(
    "extracurricular", "extracurricular learning: KD on real and on synthetic inputs drawn by "
    "--sampler", _extracurricular,
    # The defaults are the setting results/extracurricular.md selects on validation
    # (MNIST-1D, all labels): a full-covariance GMM, ratio 4, weight 4, temperature 1.
    settings=(
        Setting("sampler", "gmm", "Synthetic inputs for --method=extracurricular: gmm (Gaussian "
                "mixture of 10 components fitted to the training inputs, --gmm_covariance), mixup "
                "(Beta-mixed pairs), cutmix (pasted boxes, images only), noise (Gaussian kernel "
                "density around real inputs), uniform (input box).",
                choices=("gmm", "mixup", "cutmix", "noise", "uniform")),
        Setting("gmm_covariance", "auto", "Covariance of --sampler=gmm's components: full, diag, "
                "spherical, or auto = full for inputs of at most 256 features (MNIST-1D's 40), "
                "diag above (a full covariance of a 28x28 image holds 784^2 numbers).",
                choices=("auto", "full", "diag", "spherical")),
        Setting("synthetic_loss_weight", 4.0, "Weight of the distillation loss on synthetic inputs "
                "relative to real ones.", lower_bound=0.0),
        Setting("synthetic_ratio", 4.0, "Synthetic examples per real example in each batch.",
                lower_bound=0.0),
    ),
    defaults={"temperature": 1.0},
    label="student, extracurricular"))
register(Method(
    "fitnets", "FitNets: task loss plus --feature_weight times a feature MSE at one stage "
    "(--stages) (Romero et al. 2015)", _fitnets,
    settings=(Setting("feature_weight", 1.0, "Weight of the FitNets feature loss "
                      "(--method=fitnets).", lower_bound=0.0),),
    uses_stages=True, label="student, FitNets"))
register(Method(
    "sskd", "SSKD: stage-by-stage backbone mimicking (--stage_epochs each), then --epochs of head "
    "training", trainer="sskd",
    settings=(Setting("stage_epochs", 10, "Epochs of each SSKD backbone phase (--method=sskd).",
                      lower_bound=1),),
    uses_stages=True, label="student, SSKD"))
register(Method(
    "at", "AT: attention maps of every stage pair (--stages; default the models' stages) matched "
    "with weight --at_weight (Zagoruyko & Komodakis 2017)", _at,
    settings=(Setting("at_weight", 1000.0, "Weight of each AT stage pair (--method=at; the "
                      "paper's beta).", lower_bound=0.0),),
    uses_stages=True, label="student, AT"))
register(Method(
    "rkd", "RKD: distances and angles within a batch of penultimate features (Park et al. 2019)",
    lambda cfg, ctx: {"distillation_losses": [losses.RKD(
        _PENULTIMATE, _PENULTIMATE, distance_weight=cfg.rkd_distance_weight,
        angle_weight=cfg.rkd_angle_weight)]},
    settings=(
        Setting("rkd_distance_weight", 25.0, "Weight of RKD's distance term (--method=rkd).",
                lower_bound=0.0),
        Setting("rkd_angle_weight", 50.0, "Weight of RKD's angle term (--method=rkd).",
                lower_bound=0.0),
    ),
    label="student, RKD"))
register(Method(
    "pkt", "PKT: cosine-similarity distributions within a batch of penultimate features "
    "(Passalis & Tefas 2018)",
    lambda cfg, ctx: {"distillation_losses": [losses.PKT(_PENULTIMATE, _PENULTIMATE)],
                      "distillation_loss_weights": [cfg.pkt_weight]},
    settings=(Setting("pkt_weight", 30000.0, "Weight of the PKT loss (--method=pkt; the reference "
                      "code's CIFAR-100 value for its mean over B^2 pairs).", lower_bound=0.0),),
    label="student, PKT"))


def _crd(cfg, ctx):
    if ctx.num_examples is None:
        raise ValueError(
            "method: crd keeps a memory bank row per training example: the caller must give "
            "the number of training examples (BuildContext.num_examples) and training batches "
            "with each example's index (kdtf.batches.make(x, index=i)), as pipeline.experiment "
            "does.")
    return {"distillation_losses": [losses.CRD(
        _PENULTIMATE, _PENULTIMATE, num_examples=ctx.num_examples,
        num_negatives=cfg.crd_negatives, temperature=cfg.crd_temperature,
        momentum=cfg.crd_momentum, seed=cfg.seed)],
        "distillation_loss_weights": [cfg.crd_weight]}


def _reviewkd(cfg, ctx):
    names = ctx.stage_pairs()
    if names is None:
        from kdtf import stagewise

        names = [stagewise.default_stages(ctx.teacher), stagewise.default_stages(ctx.student)]
        # The official deepest "stage" is the pooled penultimate feature.
        if all(_PENULTIMATE in [layer.name for layer in m.layers] for m in (ctx.teacher, ctx.student)):
            names = [n + [_PENULTIMATE] for n in names]
        if len(names[0]) != len(names[1]):
            raise ValueError(
                f"stages: reviewkd pairs the models' stages one to one, but the teacher has "
                f"{len(names[0])} ({', '.join(names[0])}) and the student {len(names[1])} "
                f"({', '.join(names[1])}); name the pairs, e.g. --stages=stage2:stage1.")
    return {"distillation_losses": [losses.ReviewKD(
        list(names[0]), list(names[1]),
        warmup_steps=int(round(cfg.reviewkd_warmup_epochs * ctx.steps_per_epoch)))],
        "distillation_loss_weights": [cfg.reviewkd_weight]}


register(Method(
    "crd", "CRD: NCE of penultimate-feature embeddings against a memory bank of negatives "
    "(Tian et al. 2020)", _crd,
    settings=(
        Setting("crd_weight", 0.8, "Weight of the CRD loss (--method=crd; the paper's beta).",
                lower_bound=0.0),
        Setting("crd_negatives", 16384, "Negatives per anchor drawn from CRD's memory bank.",
                lower_bound=1),
        Setting("crd_temperature", 0.07, "Temperature of CRD's scores (> 0).", lower_bound=1e-6),
        Setting("crd_momentum", 0.5, "Momentum of CRD's memory-bank update.", lower_bound=0.0,
                upper_bound=0.999),
    ),
    label="student, CRD"))
register(Method(
    "reviewkd", "ReviewKD: student stages fused deep to shallow (ABF) and matched to the teacher's "
    "with the hierarchical context loss (--stages; default the models' stages and pooled "
    "features) (Chen et al. 2021)", _reviewkd,
    settings=(
        Setting("reviewkd_weight", 1.0, "Weight of the ReviewKD loss (--method=reviewkd; the "
                "official script's default; its per-pair values: 5 for resnet32x4 -> resnet8x4, "
                "0.6 for resnet56 -> resnet20).", lower_bound=0.0),
        Setting("reviewkd_warmup_epochs", 20.0, "Epochs over which ReviewKD's loss grows "
                "linearly from 0 (the paper: 20 of 240).", lower_bound=0.0),
    ),
    uses_stages=True, label="student, ReviewKD"))
