"""Builds the HTML report of one `pipeline.experiment.run` (the results JSON of `apps/distill.py`).

The report compares the teacher with every trained student (ERM and
distilled) on the test split: accuracy, agreement and KL with the teacher, ECE,
reliability diagrams, per-class accuracy, teacher-vs-student confusion
matrices, parameters, MACs/FLOPs, TFLite size / latency / fidelity, and the
training curves of every loss term from the run's Keras histories.
"""
import base64
import dataclasses
import datetime
import html
import json
import os

import numpy as np

from pipeline import experiment
from kdtf import heads
from kdtf import metrics as metrics_lib
from pipeline.report import flops as flops_lib
from pipeline.report import plots

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"


def _method_label(method):
    """The registry's row name of `method` without its "student, " prefix."""
    from kdtf import methods

    label = methods.get(method).label if method in methods.REGISTRY else ""
    return label.removeprefix("student, ") or method


# ------------------------------------------------------------------ inputs
def load_results(path, arg="results"):
    """Reads and checks a results JSON written by `pipeline.experiment.run`.

    Raises:
        FileNotFoundError / ValueError naming `arg` for a missing file, bad
        JSON, or JSON that is not a run's results.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{arg}: no such file {path!r}.")
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{arg}: {path!r} is not valid JSON ({e}).") from e
    except OSError as e:
        raise ValueError(f"{arg}: cannot read {path!r}: {e}") from e
    if not isinstance(results, dict):
        raise ValueError(f"{arg}: {path!r} holds a JSON {type(results).__name__}, not a run's results.")
    missing = [k for k in ("config", "teacher", "students") if k not in results]
    if missing:
        raise ValueError(
            f"{arg}: {path!r} is not a results file of apps/distill.py (no {', '.join(missing)}); "
            "pass the results.json of a run directory."
        )
    if not isinstance(results["students"], dict) or not results["students"]:
        raise ValueError(f"{arg}: {path!r} lists no trained students.")
    for method, entry in results["students"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("history", {}), dict):
            raise ValueError(f"{arg}: {path!r}: students/{method} is not a student's results.")
    return results


def run_config(config):
    """The `RunConfig` of a results file (unknown keys from other versions are ignored)."""
    if not isinstance(config, dict):
        raise ValueError(f"results: 'config' must be an object; got {type(config).__name__}.")
    fields = {f.name for f in dataclasses.fields(experiment.RunConfig)}
    return experiment.RunConfig(**{k: v for k, v in config.items() if k in fields})


def student_path(cfg, method):
    """Where `experiment.run` saves the student trained with `method`."""
    return os.path.join(cfg.workdir, "students", f"{method}_{cfg.student}_s{cfg.seed}.keras")


def locate_models(results, results_path):
    """Paths of the run's teacher and students: `(teacher_path, {method: path})`.

    The run's workdir is tried as recorded (relative to the current
    directory), then as the parent of the results file's `results/` folder
    (a workdir that was moved or given relative to another directory).
    """
    if isinstance(results.get("files"), dict):  # written since runs have their own directories
        return _recorded_models(results, results_path)
    cfg = run_config(results["config"])
    workdirs = [cfg.workdir]
    parent = os.path.dirname(os.path.dirname(os.path.abspath(results_path)))
    if os.path.abspath(cfg.workdir) != parent:
        workdirs.append(parent)

    def find(kind, make):
        tried = []
        for workdir in workdirs:
            path = make(dataclasses.replace(cfg, workdir=workdir))
            if os.path.isfile(path):
                return path
            tried.append(path)
        raise FileNotFoundError(
            f"results: the {kind} of this run is not saved (looked for {' and '.join(map(repr, tried))}); "
            "rerun apps/distill.py with the same flags (it saves the teacher and every student)."
        )

    teacher = find("teacher", experiment.teacher_path)
    students = {m: find(f"{m!r} student", lambda c, m=m: student_path(c, m)) for m in results["students"]}
    return teacher, students


def _recorded_models(results, results_path):
    """The model paths a results file records, as saved or beside a moved run directory."""
    files = results["files"]
    here = os.path.dirname(os.path.abspath(results_path))
    run_dir = files.get("run_dir", here)

    def find(kind, path):
        tried = [path]
        if os.path.isfile(path):
            return path
        # A moved workdir: the same place relative to the run directory.
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(run_dir))
        tried.append(os.path.normpath(os.path.join(here, rel)))
        for candidate in tried[1:]:
            if os.path.isfile(candidate):
                return candidate
        raise FileNotFoundError(
            f"results: the {kind} of this run is not saved (looked for {' and '.join(map(repr, tried))}); "
            "rerun apps/distill.py with the same flags (it saves the teacher and every student)."
        )

    students = files.get("students", {})
    missing = [m for m in results["students"] if m not in students]
    if missing:
        raise ValueError(f"results: {results_path!r} records no file for the students {missing}.")
    return find("teacher", files["teacher"]), {
        m: find(f"{m!r} student", students[m]) for m in results["students"]}


# ------------------------------------------------------------------ numbers
@dataclasses.dataclass
class ModelEntry:
    """One model of the report and everything measured on it."""

    key: str  # "teacher" or the method
    label: str
    path: str
    logits: np.ndarray = None
    metrics: dict = None
    per_class: np.ndarray = None
    complexity: dict = None
    tflite: dict = None
    history: dict = None
    confusion: np.ndarray = None
    reliability: tuple = None


def _export(model, path, quantization, x_train, x, y):
    from kdtf import export as export_lib

    try:
        report = export_lib.tflite(
            model, path, quantization=quantization,
            representative_data=x_train[:100] if quantization == "int8" else None,
            # The report shows the agreement it measures; it does not gate on it.
            verify_data=x, verify_labels=y, overwrite=True, min_agreement=0,
        )
        return report.to_dict()
    except Exception as e:  # one model's failed export should not lose the whole report
        return {"error": " ".join(f"{type(e).__name__}: {e}".split())[:300]}


# How far a saved model's test metrics may be from those the run recorded
# (float differences between machines can flip a near-tie or two).
_TOLERANCE = {"accuracy": 2e-3, "agreement": 2e-3}


def _mismatch(measured, stored):
    """A description of the metrics that differ from the run's, or ""."""
    out = []
    for key, tol in _TOLERANCE.items():
        if isinstance(stored.get(key), (int, float)) and key in measured:
            if abs(measured[key] - stored[key]) > tol:
                out.append(f"{key} {measured[key]:.4f}, the run recorded {stored[key]:.4f}")
    return "; ".join(out)


def collect(results, results_path, output_dir, split="test", num_bins=15, tflite=True,
            quantization="run", log=None):
    """Loads the run's models and measures everything the report shows.

    Args:
        results: the dict of `load_results`.
        results_path: its path (to find a moved workdir).
        output_dir: the report's directory (TFLite files go to `tflite/`).
        split: "test" or "val".
        num_bins: reliability-diagram bins.
        tflite: export every model to TFLite and verify it (size, latency).
        quantization: "run" (the run's `quantization`) or a
            `kdtf.export.tflite` quantization.
        log: optional callable for progress lines.

    Returns:
        `(cfg, entries, y, counts, warnings)`: the `RunConfig`, a list of
        `ModelEntry` (teacher first), the split's labels, the examples per
        class, and lines about saved models whose test metrics differ from
        those the run recorded.
    """
    log = log or (lambda msg: None)
    if split not in ("test", "val"):
        raise ValueError(f"split: must be 'test' or 'val'; got {split!r}.")
    cfg = run_config(results["config"])
    teacher_file, student_files = locate_models(results, results_path)
    full, students_view = experiment.load_data(cfg)
    x, y = getattr(full, f"x_{split}"), getattr(full, f"y_{split}")
    x_train = students_view.x_train
    q = cfg.quantization if quantization == "run" else quantization
    q = None if q in ("none", "", None) else q
    entries = [ModelEntry("teacher", f"teacher ({cfg.teacher if not os.path.exists(cfg.teacher) else os.path.basename(cfg.teacher)})", teacher_file)]
    for method, path in student_files.items():
        entry = ModelEntry(method, f"student, {_method_label(method)}", path)
        entry.history = results["students"][method].get("history", {})
        entries.append(entry)
    tflite_dir = os.path.join(output_dir, "tflite")
    teacher_logits = None
    warnings = []
    for entry in entries:
        log(f"evaluating {entry.label}: {entry.path}")
        model = experiment.load_model(entry.path, entry.key)
        # A softmax output is read as log-probabilities (kdtf.heads.as_logits).
        entry.logits = np.asarray(heads.as_logits(model, model.predict(x, batch_size=512, verbose=0)),
                                  dtype=np.float64)
        if entry.logits.ndim != 2 or entry.logits.shape[1] != full.num_classes:
            raise ValueError(
                f"{entry.path!r} outputs shape {entry.logits.shape[1:]}; the report needs "
                f"[{full.num_classes}] class logits."
            )
        m = {
            "accuracy": metrics_lib.accuracy(y, entry.logits),
            "ece": metrics_lib.expected_calibration_error(y, entry.logits, num_bins=num_bins),
        }
        if teacher_logits is None:
            teacher_logits = entry.logits
        else:
            m["agreement"] = metrics_lib.agreement(teacher_logits, entry.logits)
            m["kl_to_teacher"] = metrics_lib.kl_to_teacher(teacher_logits, entry.logits)
            entry.confusion = metrics_lib.teacher_student_confusion(teacher_logits, entry.logits)
        entry.metrics = m
        if split == "test":
            stored = results["teacher"] if entry.key == "teacher" else results["students"][entry.key]
            mismatch = _mismatch(m, stored)
            if mismatch:
                warnings.append(
                    f"{entry.label}: {entry.path} is not the model this run evaluated ({mismatch}); "
                    "a later run with other settings (e.g. other --epochs) probably overwrote it. "
                    "The numbers below are those of the file."
                )
                log("warning: " + warnings[-1])
        entry.per_class, counts = metrics_lib.per_class_accuracy(y, entry.logits, full.num_classes)
        entry.reliability = metrics_lib.reliability_curve(y, entry.logits, num_bins=num_bins)
        entry.complexity = flops_lib.model_complexity(model)
        if tflite:
            os.makedirs(tflite_dir, exist_ok=True)
            log(f"exporting {entry.label} to TFLite ({q or 'float32'}) and verifying it")
            entry.tflite = _export(model, os.path.join(tflite_dir, f"{entry.key}.tflite"), q, x_train, x, y)
    return cfg, entries, np.asarray(y), counts, warnings


# ------------------------------------------------------------------ HTML
_CSS = """
body{font-family:"DejaVu Sans",Arial,Helvetica,sans-serif;margin:0 auto;max-width:1240px;
     padding:12px 28px 40px;color:#222;line-height:1.4}
h1{font-size:24px;margin:14px 0 4px} h2{font-size:19px;margin:28px 0 6px;
   border-bottom:2px solid #ddd;padding-bottom:3px}
h3{font-size:15px;margin:18px 0 4px}
nav{margin:8px 0 4px;font-size:14px} nav a{margin-right:14px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13.5px}
th,td{border:1px solid #c8c8c8;padding:4px 10px;vertical-align:top}
th{background:#f0f0f0;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums;
   white-space:nowrap}
tr.teacher td{background:#fafafa}
td.best{font-weight:bold}
img{max-width:100%;height:auto;display:block;margin:8px 0 6px;border:1px solid #eee}
.note{color:#555;font-size:13px;max-width:1100px}
details{margin:6px 0 12px;font-size:13px} summary{cursor:pointer;color:#1f5fa8}
.err{color:#b00020}
.warn{border:2px solid #b00020;background:#fff4f4;padding:6px 12px;margin:10px 0;font-size:14px}
.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.row img{flex:1 1 560px;min-width:0;max-width:700px}
"""


def _fmt(value, spec=".4f", missing="–"):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return missing
    return format(value, spec)


def _table(header, rows, num_cols=(), row_classes=None, cell_classes=None):
    out = ["<table>", "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        cells = []
        for c, value in enumerate(row):
            classes = (["num"] if c in num_cols else []) + (
                [cell_classes[r][c]] if cell_classes and cell_classes[r][c] else [])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{value}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


class _Figures:
    """Writes figures to `<output>/figures/` and makes their <img> tags."""

    def __init__(self, output_dir, embed):
        self.dir = os.path.join(output_dir, FIGURES_DIR)
        os.makedirs(self.dir, exist_ok=True)
        self.embed = embed
        self.files = []

    def img(self, fig, name, alt):
        path = os.path.join(self.dir, name + ".png")
        data = plots.save_png(fig, path)
        self.files.append(path)
        if self.embed:
            src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        else:
            src = f"{FIGURES_DIR}/{name}.png"
        return f'<img src="{src}" alt="{html.escape(alt)}" id="fig-{name}">'


def _summary_section(entries, split, num_bins):
    e = html.escape
    students = entries[1:]
    best = max(s.metrics["accuracy"] for s in students)
    rows, classes, cell_classes = [], [], []
    for entry in entries:
        m, c = entry.metrics, entry.complexity
        rows.append([
            e(entry.label), _fmt(m["accuracy"]), _fmt(m.get("agreement"), ".3f"),
            _fmt(m.get("kl_to_teacher"), ".4f"), _fmt(m["ece"], ".4f"),
            f"{c['params']:,}", _fmt(c["flops"] / 1e6, ".3f"),
        ])
        classes.append("teacher" if entry.key == "teacher" else "")
        cell_classes.append(["", "best" if entry.key != "teacher" and m["accuracy"] == best else ""]
                            + [""] * 5)
    table = _table(
        ["model", f"{split} accuracy", "agreement with teacher", "KL(teacher ‖ model)", "ECE",
         "parameters", "MFLOPs"],
        rows, num_cols=range(1, 7), row_classes=classes, cell_classes=cell_classes,
    )
    return (
        '<section id="summary"><h2>Summary</h2>' + table +
        f'<p class="note">On the {len(entries[0].logits)} examples of the {split} split. Agreement: '
        "share of examples where the model's top-1 class equals the teacher's. KL: mean "
        "KL(p<sub>teacher</sub> ‖ p<sub>model</sub>) of the softmax outputs at temperature 1, in nats. "
        f"ECE: expected calibration error of the max-probability confidence over {num_bins} "
        "equal-width bins. The best student accuracy is in bold.</p></section>"
    )


def _efficiency_section(entries, figures, quantization_label, split):
    e = html.escape
    rows = []
    for entry in entries:
        c, t = entry.complexity, entry.tflite
        row = [e(entry.label), f"{c['params']:,}", f"{c['macs']:,}", f"{c['flops']:,}"]
        if t is None:
            row += ["not exported"] + ["–"] * 5
        elif "error" in t:
            row += [f'<span class="err">export failed: {e(t["error"])}</span>'] + ["–"] * 5
        else:
            row += [
                e(f"{entry.key}.tflite ({t['quantization']})"),
                _fmt(t["size_bytes"] / 1024, ".1f"), _fmt(t.get("latency_ms"), ".4f"),
                _fmt(t.get("accuracy"), ".4f"), _fmt(t.get("top1_agreement"), ".4f"),
                _fmt(t.get("max_abs_error"), ".2e"),
            ]
        rows.append(row)
    table = _table(
        ["model", "parameters", "MACs", "FLOPs (2 × MACs)", "TFLite file", "size (KiB)",
         "latency (ms, batch 1)", "TFLite accuracy", "TFLite = Keras top-1", "max |TFLite − Keras|"],
        rows, num_cols=range(1, 10), row_classes=["teacher"] + [""] * (len(entries) - 1),
    )
    sizes = [None if not e_.tflite or "error" in e_.tflite else e_.tflite["size_bytes"] / 1024
             for e_ in entries]
    fig = plots.efficiency([x.label for x in entries], [x.complexity["flops"] / 1e6 for x in entries],
                           [x.metrics["accuracy"] for x in entries], sizes, ylabel=f"{split} accuracy")
    details = []
    for entry in entries:
        layer_rows = [[e(l["name"]), e(l["kind"]), e("×".join(map(str, l["output_shape"][1:]))),
                       f"{l['macs']:,}"] for l in entry.complexity["layers"]]
        details.append(f"<details><summary>MACs per layer: {e(entry.label)}</summary>"
                       + _table(["layer", "type", "output", "MACs"], layer_rows, num_cols=(3,))
                       + "</details>")
    return (
        '<section id="efficiency"><h2>Size and speed</h2>' + table +
        figures.img(fig, "efficiency", "accuracy against FLOPs") +
        '<p class="note">MACs: multiply-accumulates per example (batch 1) of the Dense and convolution '
        "layers, counted from the Keras model (one per kernel weight per output position; depthwise, "
        "separable, grouped and transposed convolutions included). FLOPs = 2 × MACs. Biases, "
        "activations, normalisation and pooling are not counted. TFLite: each model exported with "
        f"<code>kdtf.export.tflite</code> ({e(quantization_label)}), run with the LiteRT interpreter "
        "on the whole split (accuracy, top-1 agreement with the Keras model, largest output "
        "difference); latency is the median of 20 batch-1 invocations on the machine that built "
        "this report.</p>" + "".join(details) + "</section>"
    )


def _curves_section(entries, figures):
    parts = ['<section id="curves"><h2>Training curves</h2>',
             '<p class="note">Per epoch, from the Keras history the run stored in its results JSON: '
             "the total loss and each term (student = task loss on the labels, distillation, synthetic "
             "when the method draws synthetic inputs), training (solid) and validation (dashed), and "
             "accuracy. In evaluation a distiller's total loss is the task loss (comparable with ERM) "
             "and no synthetic inputs are drawn. SSKD: a loss panel per backbone phase, then the head's.</p>"]
    for entry in entries[1:]:
        if not entry.history:
            parts.append(f"<h3>{html.escape(entry.label)}</h3><p class='note'>No history stored.</p>")
            continue
        fig = plots.training_curves(entry.history, entry.label)
        parts.append(figures.img(fig, f"curves_{entry.key}", f"training curves of {entry.label}"))
    parts.append("</section>")
    return "".join(parts)


def _reliability_section(entries, figures, num_bins):
    fig = plots.reliability_diagrams(
        [(x.label, *x.reliability, x.metrics["ece"]) for x in entries], num_bins)
    return (
        '<section id="reliability"><h2>Calibration</h2>' +
        figures.img(fig, "reliability", "reliability diagrams") +
        f'<p class="note">Top: accuracy of the examples in each of {num_bins} confidence bins (bars) '
        "against the diagonal of perfect calibration; the hatched part is the gap between the bin's "
        "mean confidence and its accuracy (above the bar: over-confident). Bottom: examples per bin. "
        "ECE is the count-weighted mean gap.</p></section>"
    )


def _per_class_section(entries, figures, counts):
    fig = plots.per_class_accuracy([x.label for x in entries], [x.per_class for x in entries], counts)
    rows = []
    for k in range(len(counts)):
        rows.append([str(k), f"{int(counts[k]):,}"] + [_fmt(x.per_class[k], ".3f") for x in entries])
    table = _table(["class", "examples"] + [html.escape(x.label) for x in entries], rows,
                   num_cols=range(0, 2 + len(entries)))
    return (
        '<section id="per-class"><h2>Per-class accuracy</h2>' +
        figures.img(fig, "per_class_accuracy", "per-class accuracy") + table + "</section>"
    )


def _confusion_section(entries, figures):
    parts = ['<section id="confusion"><h2>Teacher vs student predictions</h2>',
             '<p class="note">Rows: the teacher\'s top-1 class; columns: the student\'s. The diagonal '
             "holds the examples on which they agree (its sum over the total is the agreement); "
             "off-diagonal cells show which of the teacher's classes the student confuses.</p>"]
    parts.append('<div class="row">')
    for entry in entries[1:]:
        m = entry.confusion
        title = f"teacher vs {entry.label}: agreement {np.trace(m) / m.sum():.3f}"
        parts.append(figures.img(plots.confusion(m, title), f"confusion_{entry.key}", title))
    parts.append("</div></section>")
    return "".join(parts)


def _config_section(results, results_path, entries):
    e = html.escape
    cfg = results["config"]
    pairs = [(e(str(k)), "–" if v is None or v == "" else e(v if isinstance(v, str) else json.dumps(v)))
             for k, v in cfg.items()]
    half = (len(pairs) + 1) // 2
    rows = [[*pairs[i], *(pairs[i + half] if i + half < len(pairs) else ("", ""))] for i in range(half)]
    files = [[e(x.label), e(os.path.abspath(x.path))] for x in entries]
    extra = ""
    if "seconds" in results:
        extra = f"<p class='note'>The run took {results['seconds']:.0f} s.</p>"
    return (
        '<section id="config"><h2>Run</h2>' +
        _table(["model", "file"], files) +
        "<h3>Settings</h3>" + _table(["setting", "value", "setting", "value"], rows) +
        f"<p class='note'>Results file: {e(os.path.abspath(results_path))}</p>" + extra + "</section>"
    )


def write_html(results, results_path, output_dir, cfg, entries, counts, split="test", num_bins=15,
               embed_images=True, quantization_label="float32", warnings=()):
    """Writes `<output_dir>/report.html`, its figures and `report.json`; returns the HTML path."""
    figures = _Figures(output_dir, embed_images)
    e = html.escape
    title = (f"Distillation report: {cfg.teacher} → {cfg.student} ({_method_label(cfg.method)}) "
             f"on {cfg.dataset}, seed {cfg.seed}")
    body = [
        f"<h1>{e(title)}</h1>",
        f"<p class='note'>Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} from "
        f"{e(os.path.abspath(results_path))}.</p>",
        "<nav>" + " ".join(f'<a href="#{i}">{t}</a>' for i, t in (
            ("summary", "Summary"), ("efficiency", "Size and speed"), ("curves", "Training curves"),
            ("reliability", "Calibration"), ("per-class", "Per-class accuracy"),
            ("confusion", "Teacher vs student"), ("config", "Run"))) + "</nav>",
        "".join(f'<div class="warn">Warning: {e(w)}</div>' for w in warnings),
        _summary_section(entries, split, num_bins),
        _efficiency_section(entries, figures, quantization_label, split),
        _curves_section(entries, figures),
        _reliability_section(entries, figures, num_bins),
        _per_class_section(entries, figures, counts),
        _confusion_section(entries, figures),
        _config_section(results, results_path, entries),
    ]
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    path = os.path.join(output_dir, REPORT_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(path + ".tmp", path)
    summary = {
        "results": os.path.abspath(results_path), "split": split, "num_bins": num_bins,
        "warnings": list(warnings),
        "figures": [os.path.relpath(p, output_dir) for p in figures.files],
        "models": {
            x.key: {
                "label": x.label, "path": os.path.abspath(x.path), **x.metrics,
                "params": x.complexity["params"], "macs": x.complexity["macs"],
                "flops": x.complexity["flops"], "tflite": x.tflite,
                "per_class_accuracy": [None if not np.isfinite(a) else float(a) for a in x.per_class],
            }
            for x in entries
        },
    }
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return path


def build_report(results_path, output_dir, split="test", num_bins=15, tflite=True,
                 quantization="run", embed_images=True, log=None):
    """Builds the HTML report of a run; returns the path of `report.html`.

    Args:
        results_path: `<workdir>/results/<method>_<student>_s<seed>.json`.
        output_dir: directory for `report.html`, `figures/*.png`,
            `tflite/*.tflite` and `report.json` (created; files replaced).
        split: "test" or "val".
        num_bins: reliability-diagram / ECE bins (int >= 1).
        tflite: export and verify every model as TFLite (size, latency).
        quantization: "run" (the run's) or "none", "dynamic", "float16", "int8".
        embed_images: embed the PNGs in the HTML (one self-contained file);
            otherwise the page links `figures/*.png`.
        log: optional callable for progress lines.

    Example:

    ```python
    pipeline.report.build_report("runs/results/kd_mnist1d_mlp_s0.json", "runs/report")
    ```
    """
    results = load_results(results_path)
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins: must be an int >= 1; got {num_bins!r}.")
    if quantization not in ("run", "none", "float32", "dynamic", "float16", "int8"):
        raise ValueError(
            f"quantization: unknown value {quantization!r}; valid values: run, none, dynamic, float16, int8."
        )
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FileExistsError(f"output: {output_dir!r} exists and is not a directory.")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"output: cannot create the directory {output_dir!r}: {e}") from e
    cfg, entries, _, counts, warnings = collect(results, results_path, output_dir, split=split, num_bins=num_bins,
                                      tflite=tflite, quantization=quantization, log=log)
    q = cfg.quantization if quantization == "run" else quantization
    label = "float32, no quantization" if q in (None, "none", "float32") else f"{q} quantization"
    return write_html(results, results_path, output_dir, cfg, entries, counts, split=split,
                      num_bins=num_bins, embed_images=embed_images, quantization_label=label,
                      warnings=warnings)
