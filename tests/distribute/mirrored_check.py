"""Run by test_mirrored.py in its own process: 2 logical CPUs must be set up
before TensorFlow runs any op. Trains the same Distiller single-device and
under MirroredStrategy and prints the largest weight difference as JSON."""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kdtf  # noqa: E402
import toy_models  # noqa: E402 (beside this script)

METHOD = sys.argv[1] if len(sys.argv) > 1 else "kd"


def build():
    if METHOD == "crd":
        # CRD on the 8-wide "stage2" features; its memory bank (64 rows) is
        # updated from the global batch on every replica.
        teacher, student = toy_models.stage_teacher_and_student()
        from kdtf.losses.crd import CRD

        d = kdtf.Distiller(teacher, student, CRD(
            "stage2", "stage2", num_examples=64, embedding_dim=6, num_negatives=12, seed=5), [0.8],
            student_loss_weight=0.5, seed=1)
        d.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return d
    teacher, student = toy_models.teacher_and_student()
    losses = {"kd": kdtf.losses.KD(2.0), "dist": kdtf.losses.DIST(2.0),
              "dist_global": kdtf.losses.DIST(2.0, global_batch=True)}
    sampler = None
    from kdtf import samplers

    if METHOD == "mixup":
        sampler = samplers.Mixup(alpha=1.0, seed=3)
    elif METHOD == "noise0":
        # Noise of scale 0 around a permutation of the batch: the synthetic half
        # holds the same inputs on one device and across replicas, so the runs
        # must match exactly; this checks the synthetic term's replica scaling.
        sampler = samplers.GaussianNoise(stddev=0.0, seed=3)
    d = kdtf.Distiller(teacher, student, losses.get(METHOD, losses["kd"]), student_loss_weight=0.5,
                       sampler=sampler, seed=1)
    optimizer = keras.optimizers.Adam(1e-2) if METHOD == "nan_adam" else keras.optimizers.SGD(0.1)
    d.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return d


rng = np.random.default_rng(0)
x = rng.normal(size=(64, 10)).astype("float32")
y = rng.integers(0, 5, size=64).astype("int32")
if METHOD == "nan_adam":
    # Step 2's batch is rows 16-31; replica 0 gets 16-23, so only its loss is
    # NaN: both replicas must skip the update (and Adam must not move).
    x[20, 3] = np.nan


def train_sskd(strategy):
    """SSKD: 2 backbone phases (Distiller runs) and the head phase, SGD."""
    with strategy.scope():
        teacher, student = toy_models.stage_teacher_and_student()
        sskd = kdtf.StagewiseDistiller(teacher, student, backbone_optimizer=keras.optimizers.SGD(0.1),
                                       head_optimizer=keras.optimizers.SGD(0.1))
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        histories = sskd.fit(ds, epochs_per_stage=2, head_epochs=2, verbose=0)
    history = {"loss": histories["stage1"]["distillation_loss"] + histories["stage2"]["distillation_loss"],
               "distillation_loss": histories["head"]["loss"]}
    return [v.numpy() for v in student.weights], history


def train(strategy):
    if METHOD == "sskd":
        return train_sskd(strategy)
    with strategy.scope():
        d = build()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    if METHOD == "crd":
        # The index is attached before shuffling; each epoch reshuffles alike.
        ds = tf.data.Dataset.from_tensor_slices(({"inputs": x, "index": np.arange(64)}, y))
        ds = ds.shuffle(64, seed=2).batch(16)
        hist = d.fit(ds, epochs=2, verbose=0)
        head = d.adapters[0]
        banks = [head.memory.student_bank, head.memory.teacher_bank, head.memory.z]
        # Every replica's copy of the bank must hold the same rows.
        copies = [strategy.experimental_local_results(v.value) for v in banks]
        REPLICA_DIFF.append(max(float(np.abs(np.asarray(c[0]) - np.asarray(c[-1])).max())
                                for c in copies))
        # Z is large (N * mean exp(score / tau)): compared relatively, in the history.
        hist.history["z"] = [float(v) for v in head.memory.z.numpy()]
        return [v.numpy() for v in d.student.weights + head.trainable_weights + banks[:2]], \
            hist.history
    if METHOD == "nan_adam":
        try:
            d.fit(ds, epochs=2, verbose=0)
            raise AssertionError("no NonFiniteLossError")
        except kdtf.callbacks.NonFiniteLossError:
            pass
        iterations = int(d.optimizer.iterations.numpy())
        history = {"loss": [float(iterations)], "distillation_loss": [float(iterations)]}
        return [v.numpy() for v in d.student.weights + d.optimizer.variables], history
    hist = d.fit(ds, epochs=2, verbose=0)
    return [v.numpy() for v in d.student.weights], hist.history


REPLICA_DIFF = []
single_w, single_h = train(tf.distribute.get_strategy())
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert mirrored.num_replicas_in_sync == 2
mirror_w, mirror_h = train(mirrored)
print(json.dumps({
    "max_weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(single_w, mirror_w)),
    "weight_scale": max(float(np.abs(a).max()) for a in single_w),
    "single_loss": single_h["loss"], "mirrored_loss": mirror_h["loss"],
    "single_distill": single_h["distillation_loss"], "mirrored_distill": mirror_h["distillation_loss"],
    "single_synthetic": single_h.get("synthetic_loss"),
    "mirrored_synthetic": mirror_h.get("synthetic_loss"),
    "replica_bank_diff": REPLICA_DIFF[-1] if REPLICA_DIFF else None,
    "single_z": single_h.get("z"), "mirrored_z": mirror_h.get("z"),
}))
