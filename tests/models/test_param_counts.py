"""Parameter counts of the CIFAR-100 zoo models against the published architectures.

Two references per model:

* PUBLISHED_M: the CIFAR-100 parameter counts (millions) in the CRD paper
  (Tian et al., ICLR 2020, "Contrastive Representation Distillation", table of
  teacher/student architectures), also used by the RepDistiller README.
* PYTORCH_TRAINABLE: exact counts computed by hand from the PyTorch definitions in
  github.com/HobbitLong/RepDistiller/models (resnet.py, wrn.py, vgg.py with
  batch_norm=True as mapped in models/__init__.py, mobilenetv2.py `mobile_half`,
  ShuffleNetv2.py `ShuffleV2`) with num_classes=100. PyTorch BatchNorm2d has
  2 learnable parameters per channel (weight, bias); Keras BatchNormalization
  has the same 2 trainable ones plus 2 non-trainable moving statistics, so
  these are compared with Keras *trainable* parameters. See `_pytorch_count`
  for the formulas (kept here so the numbers can be re-derived).
"""
import math

import pytest

from kdtf import models

PUBLISHED_M = {
    "resnet8x4": 1.23, "resnet32x4": 7.43, "resnet20": 0.28, "resnet56": 0.86,
    "wrn_40_2": 2.26, "wrn_16_2": 0.70, "wrn_40_1": 0.57,
    "vgg8": 3.96, "vgg13": 9.46, "mobilenetv2": 0.81, "shufflenetv2": 1.36,
}

PYTORCH_TRAINABLE = {
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860, "resnet20": 278_324,
    "resnet56": 861_620, "wrn_40_2": 2_255_156, "wrn_16_2": 703_284,
    "wrn_40_1": 569_780, "vgg8": 3_965_028, "vgg13": 9_462_180,
    "mobilenetv2": 812_836, "shufflenetv2": 1_355_528,
}


def _pytorch_count(name, c=100):
    """Trainable-parameter count of the RepDistiller PyTorch model `name`."""
    def resnet(depth, nf):
        n = (depth - 2) // 6
        p, inp = 27 * nf[0] + 2 * nf[0], nf[0]  # stem conv + BN
        for planes, stride in zip(nf[1:], (1, 2, 2)):
            for i in range(n):
                p += 9 * inp * planes + 9 * planes * planes + 4 * planes
                if i == 0 and (stride != 1 or inp != planes):
                    p += inp * planes + 2 * planes  # 1x1 downsample + BN
                inp = planes
        return p + inp * c + c

    def wrn(depth, k):
        n, ch = (depth - 4) // 6, (16, 16 * k, 32 * k, 64 * k)
        p = 27 * 16
        for g in range(3):
            for i in range(n):
                a, o = (ch[g] if i == 0 else ch[g + 1]), ch[g + 1]
                p += 2 * a + 9 * a * o + 2 * o + 9 * o * o + (a * o if a != o else 0)
        return p + 2 * ch[3] + ch[3] * c + c

    def vgg_bn(cfg):
        p, i = 0, 3
        for v in (v for block in cfg for v in block):
            p, i = p + 9 * i * v + 3 * v, v  # conv with bias + BN
        return p + 512 * c + c

    def mobile_half():
        p, inp = 27 * 16 + 32, 16
        for t, ch, n, _ in ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
            o = ch // 2
            for _ in range(n):
                h = inp * t
                p, inp = p + inp * h + 2 * h + 9 * h + 2 * h + h * o + 2 * o, o
        return p + inp * 1280 + 2 * 1280 + 1280 * c + c

    def shufflev2():
        p, i = 3 * 24 + 48, 24
        for o, nb in zip((116, 232, 464), (3, 7, 3)):
            m = o // 2
            p += 11 * i + 2 * (i * m + 2 * m) + 11 * m + m * m + 2 * m  # down unit
            p += nb * (2 * (m * m + 2 * m) + 11 * m)  # basic units
            i = o
        return p + 464 * 1024 + 2048 + 1024 * c + c

    return {
        "resnet8x4": lambda: resnet(8, (32, 64, 128, 256)),
        "resnet32x4": lambda: resnet(32, (32, 64, 128, 256)),
        "resnet20": lambda: resnet(20, (16, 16, 32, 64)),
        "resnet56": lambda: resnet(56, (16, 16, 32, 64)),
        "wrn_40_2": lambda: wrn(40, 2),
        "wrn_16_2": lambda: wrn(16, 2),
        "wrn_40_1": lambda: wrn(40, 1),
        "vgg8": lambda: vgg_bn(((64,), (128,), (256,), (512,), (512,))),
        "vgg13": lambda: vgg_bn(((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))),
        "mobilenetv2": mobile_half,
        "shufflenetv2": shufflev2,
    }[name]()


def _trainable(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_reference_formulas_agree_with_published_figures(name):
    assert _pytorch_count(name) == PYTORCH_TRAINABLE[name]
    assert abs(PYTORCH_TRAINABLE[name] / 1e6 - PUBLISHED_M[name]) <= 0.02 * PUBLISHED_M[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_trainable_params_match_pytorch_reference(zoo_model, name):
    model = zoo_model(name)
    trainable = _trainable(model)
    assert trainable == PYTORCH_TRAINABLE[name]
    assert abs(trainable / 1e6 - PUBLISHED_M[name]) <= 0.02 * PUBLISHED_M[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_non_trainable_params_are_bn_moving_stats(zoo_model, name):
    import keras

    model = zoo_model(name)
    bn_channels = sum(
        layer.gamma.shape[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert model.count_params() - _trainable(model) == 2 * bn_channels
