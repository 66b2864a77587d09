"""Distillation losses, called as `loss(teacher_outputs, student_outputs)`.

All losses are `keras.losses.Loss` subclasses computed in float32:
- `KD`: Hinton's softened-logit KL; `DIST`: Pearson inter-/intra-class relations;
  `DKD`: decoupled KD (target and non-target terms; needs the labels).
- `DistributionKL`: KL(teacher || student) of categorical or Gaussian output
  distributions (extracurricular learning); `MeanMSE`: KD on regression means.
- `FeatureMSE`: FitNets hint loss on intermediate features, with an adapter.
- `AT`: attention transfer on one pair of feature maps; `RKD`: relational KD
  (distances and angles within a batch of embeddings); `PKT`: probabilistic
  knowledge transfer (cosine-similarity distributions within a batch).
- `CRD`: contrastive representation distillation (memory bank of embeddings; needs the
  examples' dataset indices); `ReviewKD`: knowledge review (ABF fusion of several student
  stages, hierarchical context loss).
- `GaussianNLL`: the task loss of a `kdtf.heads.GaussianHead` regressor
  (called as `loss(y_true, outputs)`).
"""
import keras

from kdtf.losses.at import AT
from kdtf.losses.base import CONTEXT
from kdtf.losses.base import DistillationLoss
from kdtf.losses.crd import CRD
from kdtf.losses.dist import DIST
from kdtf.losses.dkd import DKD
from kdtf.losses.distribution import DistributionKL
from kdtf.losses.feature import FeatureMSE
from kdtf.losses.gaussian import GaussianNLL
from kdtf.losses.gaussian import MeanMSE
from kdtf.losses.kd import KD
from kdtf.losses.pkt import PKT
from kdtf.losses.reviewkd import ReviewKD
from kdtf.losses.rkd import RKD

__all__ = [
    "AT", "CONTEXT", "CRD", "DIST", "DKD", "DistillationLoss", "DistributionKL", "FeatureMSE", "GaussianNLL",
    "KD", "MeanMSE", "PKT", "RKD", "ReviewKD", "get",
]

_BY_NAME = {"kd": KD, "dist": DIST, "dkd": DKD, "distribution_kl": DistributionKL, "mean_mse": MeanMSE}


def get(identifier, **kwargs):
    """Returns a distillation loss from a name or an instance.

    Names: "kd", "dist", "dkd", "distribution_kl", "mean_mse" (`FeatureMSE` needs
    layer names, so it is built directly).

    Args:
        identifier: a `DistillationLoss`, a loss config dict, or a name.
        **kwargs: constructor arguments when `identifier` is a name.

    Returns:
        A `keras.losses.Loss`.
    """
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()](**kwargs)
    raise ValueError(
        f"Unknown distillation loss {identifier!r}; valid names: "
        f"{sorted(_BY_NAME)}."
    )

