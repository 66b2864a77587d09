"""The Distiller under MultiWorkerMirroredStrategy: 2 worker processes on
127.0.0.1 (CPU) train like one worker with the same global batch.

Keras 3.15's own `fit` fails in this setting (keras#20585); the Distiller
builds from a local batch and reduces its logs so that it works.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "multi_worker_check.py")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ",".join(str(p) for p in ports)


def _result(proc_out, proc_err, rc):
    assert rc == 0, proc_err[-3000:]
    return json.loads(proc_out.strip().splitlines()[-1])


def _cluster(methods):
    ports = _free_ports(2)
    procs = [subprocess.Popen([sys.executable, SCRIPT, str(i), ports, methods],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            results.append(_result(out, err, p.returncode))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    single = subprocess.run([sys.executable, SCRIPT, "-1", ports, methods],
                            capture_output=True, text=True, timeout=300)
    return results, _result(single.stdout, single.stderr, single.returncode)


METHODS = ("kd", "dist_global", "noise0")


@pytest.fixture(scope="module")
def runs():
    # One cluster for all methods: starting TensorFlow dominates the time.
    return _cluster(",".join(METHODS))


@pytest.mark.parametrize("method", METHODS)
def test_two_workers_match_one_worker(runs, method):
    workers, single = runs
    workers, single = [w[method] for w in workers], single[method]
    scale = max(float(np.abs(np.array(w)).max()) for w in single["weights"])
    for worker in workers:
        # Same global batch: per-replica losses scaled by 1/2, gradients summed
        # across the workers, so the updates are those of one worker.
        diff = max(float(np.abs(np.array(a) - np.array(b)).max())
                   for a, b in zip(worker["weights"], single["weights"]))
        assert diff < 1e-5 * max(1.0, scale), (method, diff)
        for key in ("loss", "distillation_loss", "student_loss", "val_loss"):
            np.testing.assert_allclose(worker["history"][key], single["history"][key],
                                       rtol=1e-4, err_msg=key)
        for key, value in single["evaluate"].items():
            np.testing.assert_allclose(worker["evaluate"][key], value, rtol=1e-4, err_msg=key)
    # Both workers hold the same (mirrored) student.
    for a, b in zip(workers[0]["weights"], workers[1]["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))


@pytest.mark.slow  # a cluster of its own (~30-60 s)
def test_sskd_two_workers_match_one_worker():
    """SSKD's phases (Distiller runs, then the plain head run) across 2 workers."""
    workers, single = _cluster("sskd")
    workers, single = [w["sskd"] for w in workers], single["sskd"]
    scale = max(float(np.abs(np.array(w)).max()) for w in single["weights"])
    assert {"stage1/distillation_loss", "stage2/val_distillation_loss", "head/loss",
            "head/val_accuracy"} <= set(single["history"])
    for worker in workers:
        diff = max(float(np.abs(np.array(a) - np.array(b)).max())
                   for a, b in zip(worker["weights"], single["weights"]))
        assert diff < 1e-5 * max(1.0, scale), diff
        for key, value in single["history"].items():
            np.testing.assert_allclose(worker["history"][key], value, rtol=1e-4, err_msg=key)


def _distill(work, extra_env, *flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", **extra_env)
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "apps", "distill.py"), f"--workdir={work}", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


ROOT = os.path.dirname(os.path.dirname(HERE))
APP_FLAGS = ("--method=dist", "--dist_global_batch", "--epochs=1", "--teacher_epochs=1",
             "--compare_erm=false", "--export=", "--verbose=0", "--batch_size=64")


def _run_dir(work):
    """The one run directory of `apps/distill.py --method=dist` under `work`."""
    (name,) = [d for d in os.listdir(work) if d.startswith("dist_mnist1d_mlp_")]
    return os.path.join(work, name)


def _app_result(work):
    with open(os.path.join(_run_dir(work), "results.json")) as f:
        return json.load(f)


@pytest.mark.slow  # ~60-150 s; the 2-worker library tests above run in CI
def test_distill_app_on_two_workers_matches_one_worker(tmp_path):
    """apps/distill.py --strategy=multi_worker on MNIST-1D: 2 processes, same global batch.

    The teacher (a plain Keras model, through kdtf.distribute.enable_multi_worker)
    and the DIST student both train across the two workers. The update rule is
    that of one worker; the all-reduce sums in another order, so weights
    agree to float32 rounding rather than bit for bit.
    """
    ports = _free_ports(2).split(",")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    multi = str(tmp_path / "multi")
    procs = [
        _distill(multi, {"TF_CONFIG": json.dumps({"cluster": cluster,
                                                  "task": {"type": "worker", "index": i}})},
                 "--strategy=multi_worker", *APP_FLAGS)
        for i in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    single = str(tmp_path / "single")
    p = _distill(single, {}, *APP_FLAGS)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    # Worker 0 wrote the run's files; worker 1 its private copies.
    run = os.path.basename(_run_dir(multi))
    assert os.path.exists(os.path.join(multi, run, "students", "dist.keras"))
    assert os.path.exists(os.path.join(multi, "workers", "1", run, "students", "dist.keras"))
    m, s = _app_result(multi), _app_result(single)
    assert abs(m["teacher"]["accuracy"] - s["teacher"]["accuracy"]) <= 0.002, (m["teacher"], s["teacher"])
    hm, hs = m["students"]["dist"]["history"], s["students"]["dist"]["history"]
    for key in ("loss", "student_loss", "distillation_loss", "val_loss"):
        np.testing.assert_allclose(hm[key], hs[key], rtol=1e-3, err_msg=key)
    for a, b in zip(_student_weights(multi), _student_weights(single)):
        np.testing.assert_allclose(a, b, atol=1e-3)


def _student_weights(work):
    import keras

    import kdtf

    kdtf.register_all()
    path = os.path.join(_run_dir(work), "students", "dist.keras")
    return [np.asarray(w) for w in keras.saving.load_model(path).get_weights()]


def test_multi_worker_without_tf_config_is_a_clear_error(tmp_path):
    p = _distill(str(tmp_path), {"TF_CONFIG": ""}, "--strategy=multi_worker", *APP_FLAGS)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1, err[-2000:]
    assert "TF_CONFIG" in err and "Traceback" not in err
