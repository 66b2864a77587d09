"""The README's "Distil your own model" block runs as it is written."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _own_model_block():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("## Distil your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section must hold exactly one python block"
    return blocks[0]


def test_the_block_is_short():
    assert len(_own_model_block().strip().splitlines()) < 30


def test_distil_your_own_model_runs_as_written(tmp_path):
    script = tmp_path / "own_model.py"
    script.write_text(_own_model_block())
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    accuracies = re.search(r"teacher ([0-9.]+) student ([0-9.]+)", out)
    assert accuracies, out
    teacher, student = map(float, accuracies.groups())
    assert teacher > 0.8 and student > 0.7, out
    assert "agreement with Keras" in out and (tmp_path / "my_student.tflite").exists()
    assert "ends in a softmax" in result.stderr
    # Run twice: the second run replaces its own export (overwrite=True) and succeeds.
    again = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]


def test_the_readme_lists_every_registered_method():
    from kdtf import methods

    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for name in methods.names():
        assert f"`--method={name}" in readme, name
