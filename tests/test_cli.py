"""kdtf.cli: TensorFlow noise filtered, Ctrl-C and a lost peer worker end an app with one line."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from kdtf import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796152746.268790    4502 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results.",
    "I0000 00:00:1796152746.269066    4502 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "E0000 00:00:1796152747.637617    4502 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, "
    "output_inference_type: FLOAT32",
]
KEPT = [
    "error: something the user must see",
    "E0000 00:00:1796152747.637617    4502 cuda_platform.cc:52] some other CUDA error",
    "W0000 00:00:1796152765.558488   14357 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.",
    "Traceback (most recent call last):",
]


def test_is_noise_drops_only_the_known_start_up_lines():
    assert all(cli.is_noise(line) for line in NOISE)
    assert not any(cli.is_noise(line) for line in KEPT)


def test_filtered_stderr_keeps_other_lines_in_order(capfd):
    with cli.filtered_stderr():
        for i, line in enumerate(NOISE + KEPT):
            # Native libraries write to the descriptor, Python through sys.stderr
            # (pytest replaces sys.stderr; sys.__stderr__ is the real one).
            if i % 2:
                os.write(2, (line + "\n").encode())
            else:
                print(line, file=sys.__stderr__, flush=True)
    assert capfd.readouterr().err.splitlines() == KEPT


def test_filtered_stderr_replays_on_an_exception(capfd):
    with pytest.raises(RuntimeError):
        with cli.filtered_stderr():
            os.write(2, f"{NOISE[0]}\nkept line\n".encode())
            raise RuntimeError("boom")
    assert capfd.readouterr().err == "kept line\n"


def test_kdtf_tf_logs_shows_everything(capfd, monkeypatch):
    monkeypatch.setenv("KDTF_TF_LOGS", "1")
    with cli.filtered_stderr():
        os.write(2, f"{NOISE[-2]}\n".encode())
    assert capfd.readouterr().err == NOISE[-2] + "\n"


def _script(tmp_path, body):
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {ROOT!r})
        from kdtf import cli
        {textwrap.indent(textwrap.dedent(body), "        ").strip()}
        """))
    return str(path)


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "KDTF_TF_LOGS", "TF_CONFIG")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra)
    return env


def _stderr_lines(proc_stderr, noise=True):
    """The non-empty stderr lines; without TensorFlow's start-up noise if `noise` is False."""
    return [line for line in proc_stderr.splitlines()
            if line.strip() and (noise or not cli.is_noise(line))]


def test_ctrl_c_in_a_running_app_ends_with_one_line_and_status_130(tmp_path):
    script = _script(tmp_path, """
        import time
        def main(argv):
            print("ready", flush=True)
            time.sleep(120)
        cli.run(main)
        """)
    # A pytest-xdist worker ignores SIGINT, and a child inherits that (Python then
    # never raises KeyboardInterrupt): give the app the default handler, as a shell does.
    proc = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    lines = _stderr_lines(err, noise=False)  # the noise: test_an_app_run_prints_no_...
    assert lines == [f"error: {cli.INTERRUPTED}"], err
    assert "rerun the same command" in lines[0] and "last finished epoch" in lines[0]


def test_a_lost_peer_worker_ends_with_one_line(tmp_path):
    script = _script(tmp_path, """
        import tensorflow as tf
        def main(argv):
            raise tf.errors.UnavailableError(
                None, None, "Collective ops is aborted by: failed to connect to all addresses\\n"
                "Additional GRPC error information: ...")
        cli.run(main)
        """)
    cluster = {"cluster": {"worker": ["localhost:1", "localhost:2"]},
               "task": {"type": "worker", "index": 1}}
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True,
                          env=_env(TF_CONFIG=json.dumps(cluster)), cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = _stderr_lines(proc.stderr, noise=False)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "rerun the same command on every worker" in lines[0]
    assert "UnavailableError: Collective ops is aborted" in lines[0]

    # The same error outside a multi-worker run is a bug to see, with its traceback.
    alone = subprocess.run([sys.executable, script], capture_output=True, text=True,
                           env=_env(), cwd=tmp_path, timeout=120)
    assert alone.returncode == 1 and "Traceback" in alone.stderr
    assert "every worker" not in alone.stderr


def test_peer_failure_needs_a_cluster_and_a_tensorflow_error(monkeypatch):
    import tensorflow as tf

    error = tf.errors.UnavailableError(None, None, "socket closed")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert not cli.peer_failure(error)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}}))
    assert cli.peer_failure(error)
    assert cli.peer_failure(tf.errors.DeadlineExceededError(None, None, "timeout"))
    assert not cli.peer_failure(ValueError("socket closed"))
    assert not cli.peer_failure(tf.errors.InvalidArgumentError(None, None, "bad shape"))
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}}))
    assert not cli.peer_failure(error)


@pytest.mark.slow  # the real case, apps/export.py with TFLite's noise, is in tests/apps/test_export_app.py
def test_an_app_run_prints_no_tensorflow_noise(tmp_path):
    """A main that uses TensorFlow and Keras, run without TF_CPP_MIN_LOG_LEVEL set."""
    script = _script(tmp_path, """
        def main(argv):
            import keras
            import numpy as np
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            print(model.predict(np.zeros((3, 4)), verbose=0).shape, flush=True)
        cli.run(main)
        """)
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, env=_env(),
                          cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(3, 2)"
    assert _stderr_lines(proc.stderr) == [], proc.stderr


def test_flags_from_a_dataclass_lists_required_fields_and_checks():
    """define_flags: list fields, required fields, checks; config_from_flags reads them back."""
    import dataclasses

    from absl import flags

    def even(n):
        if n % 2:
            raise ValueError("must be even")

    def fits(size, limit):
        if size > limit:
            raise ValueError(f"size ({size}) must be <= limit ({limit})")

    @dataclasses.dataclass
    class Config:
        path: str = dataclasses.field(metadata={"help": "Required: no default."})
        names: tuple = dataclasses.field(default=("a", "b"), metadata={"help": "Names."})
        size: int = dataclasses.field(default=2, metadata={
            "help": "Size.", "lower_bound": 0, "check": fits, "check_with": ("limit",)})
        limit: int = dataclasses.field(default=4, metadata={"help": "Limit.", "check": even})
        mode: str = dataclasses.field(default="x", metadata={"help": "Mode.", "choices": ("x", "y")})

    def parse(*argv):
        values = flags.FlagValues()
        assert cli.define_flags(Config, flag_values=values) == ["path", "names", "size", "limit",
                                                                "mode"]
        values(["app", *argv])
        return cli.config_from_flags(Config, flag_values=values)

    cfg = parse("--path=p")
    assert cfg == Config(path="p", names=("a", "b"), size=2, limit=4)
    assert isinstance(cfg.names, tuple)
    assert parse("--path=p", "--names=c", "--size=4").names == ("c",)
    assert parse("--path=p", "--names=").names == ()
    with pytest.raises(flags.IllegalFlagValueError, match="Flag --path must have a value"):
        parse()
    with pytest.raises(flags.IllegalFlagValueError,
                       match=r"flags size=5, limit=4: size \(5\) must be <= limit \(4\)"):
        parse("--path=p", "--size=5")
    with pytest.raises(flags.IllegalFlagValueError, match=r"flag --limit=5: must be even"):
        parse("--path=p", "--limit=5")

    # check_fields holds a config built in Python to the same rules, naming the flag.
    assert cli.check_fields(Config(path="p")) == Config(path="p")
    with pytest.raises(ValueError, match=r"^flags size=5, limit=4: size \(5\) must be <= "):
        cli.check_fields(Config(path="p", size=5))
    with pytest.raises(ValueError, match=r"^flag --mode=z: value should be one of <x\|y>$"):
        cli.check_fields(Config(path="p", mode="z"))
    with pytest.raises(ValueError, match=r"^flag --size=-2: -2 is not in the range \[0, inf\]$"):
        cli.check_fields(Config(path="p", size=-2))
