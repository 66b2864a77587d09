"""Run by test_multi_worker.py: one worker of a local MultiWorkerMirroredStrategy
cluster (or, with index -1, the single-worker reference). Distils a small
teacher into a student with a fixed global batch and prints JSON with the
history, an evaluate() result and the student's weights.

    python multi_worker_check.py <index|-1> <port0,port1> kd,dist_global,noise0
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
INDEX = int(sys.argv[1])
PORTS = sys.argv[2].split(",")
METHODS = sys.argv[3].split(",")
if INDEX >= 0:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in PORTS]},
        "task": {"type": "worker", "index": INDEX},
    })
else:
    os.environ.pop("TF_CONFIG", None)

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import kdtf  # noqa: E402
from kdtf import samplers  # noqa: E402
import toy_models  # noqa: E402 (beside this script)

GLOBAL_BATCH = 16

if INDEX >= 0:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == len(PORTS), strategy.num_replicas_in_sync
else:
    strategy = tf.distribute.get_strategy()

rng = np.random.default_rng(0)
x = rng.normal(size=(128, 10)).astype("float32")
y = rng.integers(0, 5, size=128).astype("int32")

def run_sskd():
    """SSKD (two Distiller phases, then the head) on the same global batches."""
    with strategy.scope():
        teacher, student = toy_models.stage_teacher_and_student()
        sskd = kdtf.StagewiseDistiller(teacher, student, backbone_optimizer=keras.optimizers.SGD(0.1),
                                       head_optimizer=keras.optimizers.SGD(0.1))
        train = kdtf.distribute.shard_by_data(
            tf.data.Dataset.from_tensor_slices((x[:96], y[:96])).batch(GLOBAL_BATCH))
        val = kdtf.distribute.shard_by_data(
            tf.data.Dataset.from_tensor_slices((x[96:], y[96:])).batch(GLOBAL_BATCH))
        histories = sskd.fit(train, validation_data=val, epochs_per_stage=2, head_epochs=2, verbose=0)
    return {"history": {f"{phase}/{k}": v for phase, h in histories.items() for k, v in h.items()},
            "weights": [w.numpy().tolist() for w in student.weights]}


def run(method):
    if method == "sskd":
        return run_sskd()
    with strategy.scope():
        teacher, student = toy_models.teacher_and_student()
        loss = {"kd": kdtf.losses.KD(2.0), "noise0": kdtf.losses.KD(2.0),
                "kd_adam": kdtf.losses.KD(2.0),
                "dist_global": kdtf.losses.DIST(2.0, global_batch=True)}[method]
        sampler = samplers.GaussianNoise(stddev=0.0, seed=3) if method == "noise0" else None
        distiller = kdtf.Distiller(teacher, student, loss, student_loss_weight=0.5,
                                   sampler=sampler, seed=1)
        optimizer = keras.optimizers.SGD(0.1)
        if method == "kd_adam":  # the apps' optimizer: Adam, cosine decay
            optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, 18))
        distiller.compile(optimizer=optimizer,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = tf.data.Dataset.from_tensor_slices((x[:96], y[:96])).batch(GLOBAL_BATCH)
    val = tf.data.Dataset.from_tensor_slices((x[96:], y[96:])).batch(GLOBAL_BATCH)
    history = distiller.fit(train.with_options(options), validation_data=val.with_options(options),
                            epochs=3, verbose=0)
    evaluation = distiller.evaluate(val.with_options(options), verbose=0, return_dict=True)
    return {
        "history": history.history,
        "evaluate": evaluation,
        "weights": [w.numpy().tolist() for w in distiller.student.weights],
    }


print(json.dumps({"index": INDEX, **{m: run(m) for m in METHODS}}))
