"""End-to-end tests of apps/report.py on a tiny apps/distill.py run, and of the
run's TensorBoard logs (every loss term and the learning rate, per step)."""
import base64
import glob
import json
import os
from html.parser import HTMLParser

import pytest

from app_runner import SLOW_CASE, run as _run
from pipeline import experiment

SECTIONS = ["summary", "efficiency", "curves", "reliability", "per-class", "confusion", "config"]
PNG = b"\x89PNG\r\n\x1a\n"
# mnist1d: 3600 training examples in batches of 128.
STEPS_PER_EPOCH = 29


def _distill(work, *flags):
    out = _run("distill.py", "--epochs=1", "--teacher_epochs=1", f"--workdir={work}", "--verbose=0",
               *flags).stdout
    return out.strip().splitlines()[-1].split("results: ")[1]


class _Page(HTMLParser):
    """The parts of report.html the tests check."""

    def __init__(self):
        super().__init__()
        self.imgs, self.sections, self.tables, self.rows = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs)
        elif tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "table":
            self.rows = []
            self.tables.append((self.sections[-1], self.rows))
        elif tag == "tr" and self.rows is not None:
            self.rows.append([])

    def handle_endtag(self, tag):
        if tag == "table":
            self.rows = None

    def handle_data(self, data):
        if self.rows and data.strip():
            self.rows[-1].append(data.strip())


def _scalars(log_dir):
    """{tag: [(step, value)]} of the scalar summaries in the event files of `log_dir`."""
    import tensorflow as tf

    out = {}
    for f in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(f):
            for v in event.summary.value:
                if v.HasField("tensor") and v.tensor.dtype != tf.string.as_datatype_enum:
                    out.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
    return out


def _run_dir(work, prefix):
    dirs = glob.glob(os.path.join(work, prefix + "*", "tensorboard"))
    assert len(dirs) == 1, (prefix, os.listdir(work))
    return dirs[0]


def _assert_per_step(logged, tags, steps=STEPS_PER_EPOCH):
    for tag in tags:
        assert tag in logged, (tag, sorted(logged))
        assert [s for s, _ in logged[tag]] == list(range(1, steps + 1)), tag


def test_help_explains_every_flag():
    out = _run("report.py", "--help").stdout
    for flag in ("results", "output", "split", "num_bins", "tflite", "quantization", "embed_images"):
        assert f"--{flag}" in out or f"--[no]{flag}" in out, flag


def test_report_and_tensorboard_of_a_tiny_run(tmp_path):
    work = str(tmp_path / "w")
    results = _distill(work, "--method=kd", f"--export={tmp_path / 's.tflite'}")
    run_dir = os.path.dirname(results)  # the run's own directory
    # Every trained student is saved, the ERM one too (with its history).
    assert sorted(os.listdir(os.path.join(run_dir, "students"))) == [
        "kd.history.json", "kd.keras", "none.history.json", "none.keras"]

    out_dir = tmp_path / "report"
    proc = _run("report.py", f"--results={results}", f"--output={out_dir}")
    html_path = proc.stdout.strip().splitlines()[-1].split("report: ")[1]
    assert html_path == str(out_dir / "report.html")
    page = _Page()
    page.feed(open(html_path, encoding="utf-8").read())
    assert page.sections == SECTIONS

    # Every figure: embedded as a PNG and written beside the page.
    names = {"efficiency", "curves_none", "curves_kd", "reliability", "per_class_accuracy",
             "confusion_none", "confusion_kd"}
    assert sorted(img["id"] for img in page.imgs) == sorted(f"fig-{n}" for n in names)
    for img in page.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == PNG
        assert img["alt"]
    pngs = {os.path.basename(p)[:-4]: p for p in glob.glob(str(out_dir / "figures" / "*.png"))}
    assert set(pngs) == names
    for path in pngs.values():
        assert os.path.getsize(path) > 5000
        assert open(path, "rb").read(8) == PNG

    # Every table, with a row per model (or class).
    tables = {}
    for section, rows in page.tables:
        tables.setdefault(section, []).append(rows)
    summary = tables["summary"][0]
    assert summary[0][:5] == ["model", "test accuracy", "agreement with teacher", "KL(teacher ‖ model)", "ECE"]
    assert [r[0] for r in summary[1:]] == ["teacher (mnist1d_cnn)", "student, ERM (labels only)", "student, KD"]
    efficiency = tables["efficiency"][0]
    assert "MACs" in efficiency[0] and "size (KiB)" in efficiency[0] and "latency (ms, batch 1)" in efficiency[0]
    assert [r[4] for r in efficiency[1:]] == ["teacher.tflite (float32)", "none.tflite (float32)",
                                              "kd.tflite (float32)"]
    assert len(tables["efficiency"]) == 1 + 3  # + MACs per layer of each model
    per_class = tables["per-class"][0]
    assert len(per_class) == 1 + 10 and len(per_class[1]) == 2 + 3
    assert len(tables["config"]) == 2

    numbers = json.load(open(out_dir / "report.json"))
    run = json.load(open(results))
    for method in ("none", "kd"):
        model = numbers["models"][method]
        assert model["accuracy"] == pytest.approx(run["students"][method]["accuracy"], abs=1e-6)
        assert model["agreement"] == pytest.approx(run["students"][method]["agreement"], abs=1e-6)
        assert model["macs"] == 40 * 100 + 100 * 100 + 100 * 10 and model["flops"] == 2 * model["macs"]
        assert model["tflite"]["top1_agreement"] > 0.99 and model["tflite"]["latency_ms"] > 0
        assert os.path.getsize(out_dir / "tflite" / f"{method}.tflite") > 0

    # TensorBoard: each loss term and the learning rate at every step.
    kd = _run_dir(run_dir, "student_kd")
    logged = _scalars(os.path.join(kd, "train"))
    _assert_per_step(logged, ["batch_loss", "batch_student_loss", "batch_distillation_loss",
                              "batch_accuracy", "learning_rate"])
    lrs = [v for _, v in logged["learning_rate"]]
    peak = experiment.with_defaults(experiment.RunConfig()).learning_rate
    assert lrs[0] == pytest.approx(peak) and all(a > b for a, b in zip(lrs, lrs[1:]))  # cosine decay
    assert {"epoch_loss", "epoch_student_loss", "epoch_distillation_loss"} <= set(
        _scalars(os.path.join(kd, "validation")))
    erm = _scalars(os.path.join(_run_dir(run_dir, "student_none"), "train"))
    _assert_per_step(erm, ["batch_loss", "learning_rate"])
    teacher = _scalars(os.path.join(_run_dir(work, "teacher_"), "train"))
    _assert_per_step(teacher, ["batch_loss", "learning_rate"])


@pytest.mark.slow  # two more training runs (~90 s on 2 cores); the callbacks' unit tests are in CI
def test_tensorboard_synthetic_loss_and_sskd_stages(tmp_path):
    work = str(tmp_path / "w")
    results = _distill(work, "--method=extracurricular", "--nocompare_erm", "--export=")
    logged = _scalars(os.path.join(_run_dir(os.path.dirname(results), "student_extracurricular"),
                                   "train"))
    _assert_per_step(logged, ["batch_loss", "batch_student_loss", "batch_distillation_loss",
                              "batch_synthetic_loss", "learning_rate"])

    results = _distill(work, "--method=sskd", "--student=mnist1d_cnn_small", "--stage_epochs=1",
                       "--nocompare_erm", "--export=")
    board = _run_dir(os.path.dirname(results), "student_sskd")
    phases = sorted(os.listdir(board))
    assert phases == ["sskd_head", "sskd_phase1", "sskd_phase2", "sskd_phase3"]
    for phase in phases:  # one TensorBoard run per stage, steps from 1
        logged = _scalars(os.path.join(board, phase, "train"))
        _assert_per_step(logged, ["batch_loss", "learning_rate"], steps=len(logged["learning_rate"]))
        assert len(logged["learning_rate"]) >= STEPS_PER_EPOCH
    assert "batch_accuracy" in _scalars(os.path.join(board, "sskd_head", "train"))

    # The report of an SSKD run: one loss panel per stage, then the head's.
    out_dir = tmp_path / "report"
    _run("report.py", f"--results={results}", f"--output={out_dir}", "--notflite", "--noembed_images")
    page = _Page()
    page.feed(open(out_dir / "report.html", encoding="utf-8").read())
    assert page.sections == SECTIONS
    assert sorted(img["src"] for img in page.imgs) == sorted(f"figures/{n}.png" for n in (
        "efficiency", "curves_sskd", "reliability", "per_class_accuracy", "confusion_sskd"))
    for img in page.imgs:
        assert os.path.getsize(out_dir / img["src"]) > 5000


@pytest.mark.parametrize("content,needle", [
    (None, "no such file"),
    pytest.param("{not json", "not valid JSON", marks=SLOW_CASE),
    pytest.param('{"config": {}, "teacher": {}}', "not a results file", marks=SLOW_CASE),
])
def test_bad_results_give_one_line_error(tmp_path, content, needle):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    proc = _run("report.py", f"--results={path}", f"--output={tmp_path / 'out'}", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


@pytest.mark.parametrize("flags,needle", [
    ([], "results"),
    pytest.param(["--results=x.json", "--num_bins=0"], "num_bins", marks=SLOW_CASE),
    (["--results=x.json", "--quantization=int4"], "quantization"),
])
def test_bad_flags_give_one_line_error(flags, needle):
    proc = _run("report.py", *flags, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and needle in proc.stderr
