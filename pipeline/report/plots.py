"""The report's figures, drawn with matplotlib's Agg backend (no display needed).

Every function returns a `matplotlib.figure.Figure` built without pyplot (no
global state, safe in threads and tests); `save_png` writes it.
"""
import io

import numpy as np

# One colour per model, in report order: teacher, then students.
COLORS = ("#444444", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
# Training-curve colour per loss term (train solid, validation dashed).
TERM_COLORS = {
    "loss": "#222222", "student_loss": "#1f77b4", "distillation_loss": "#d62728",
    "synthetic_loss": "#2ca02c", "accuracy": "#1f77b4",
}
TERM_LABELS = {
    "loss": "total", "student_loss": "student (task)", "distillation_loss": "distillation",
    "synthetic_loss": "synthetic", "accuracy": "accuracy",
}
# Annotate confusion-matrix cells and draw per-class bars up to this many classes.
MAX_ANNOTATED_CLASSES = 20


def _figure(width, height):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_png(fig, path=None):
    """Renders `fig` as PNG bytes (and writes them to `path` if given)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def _integer_epochs(ax, n):
    from matplotlib.ticker import MaxNLocator

    n = max(n, 1)
    if n <= 12:
        ax.set_xticks(range(1, n + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    ax.set_xlim(0.5, n + 0.5)


def split_phases(history):
    """Groups a Keras history by phase: `{"": {...}}`, or SSKD's `{"stage1": {...}, ..., "head": {...}}`."""
    phases = {}
    for key, values in history.items():
        phase, _, name = key.rpartition("/")
        phases.setdefault(phase, {})[name] = values
    return phases


def _loss_terms(history):
    """The loss terms of a (phase) history, total first, in a stable order."""
    order = ["loss", "student_loss", "distillation_loss", "synthetic_loss"]
    train = [k for k in history if not k.startswith("val_") and "loss" in k]
    return [k for k in order if k in train] + sorted(k for k in train if k not in order)


def _plot_terms(ax, h, terms, epochs):
    for term in terms:
        color = TERM_COLORS.get(term)
        label = TERM_LABELS.get(term, term) if term != "loss" or "student_loss" in h else "loss"
        ax.plot(epochs[: len(h[term])], h[term], "o-", color=color, ms=4, label=f"train {label}")
        val = h.get("val_" + term)
        if val is None or not np.any(np.asarray(val, dtype=float)):
            continue  # no validation value (synthetic inputs are not drawn in evaluation)
        if term == "loss" and "student_loss" in h:
            label = "total (= task in evaluation)"
        ax.plot(epochs[: len(val)], val, "s--", color=color, ms=4, mfc="white", label=f"val {label}")


def _legend_below(ax):
    # Below the axes: the curves fill the panel, a legend inside would hide some.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)


def training_curves(history, title, max_cols=3):
    """Loss terms (train solid, validation dashed) and accuracy per epoch.

    Panels: the total and task losses; the distillation terms (distillation,
    synthetic, ...) on their own scale, when there are any; accuracy. SSKD
    histories give a loss panel per backbone phase, then the head's panels.

    Args:
        history: a Keras history dict (`{"loss": [...], "val_loss": [...]}`),
            optionally with "<phase>/" prefixes (SSKD).
        title: the figure title.
        max_cols: panels per row.
    """
    main_terms = ("loss", "student_loss")
    panels = []  # (title, history, loss terms or None for accuracy)
    for phase, h in split_phases(history).items():
        prefix = f"{phase}: " if phase else ""
        terms = _loss_terms(h)
        main = [t for t in terms if t in main_terms]
        extra = [t for t in terms if t not in main_terms]
        if main:
            panels.append((prefix + ("total and task loss" if extra or "student_loss" in h else "loss"),
                           h, main))
        if extra:
            panels.append((prefix + "distillation terms", h, extra))
        if "accuracy" in h or "val_accuracy" in h:
            panels.append((prefix + "accuracy", h, None))
    cols = min(max_cols, max(len(panels), 1))
    rows = -(-len(panels) // cols)
    fig = _figure(3.9 * cols, 3.6 * rows + 0.4)  # 3 panels fit the page unscaled
    fig.suptitle(title, fontsize=12)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    for ax, (panel_title, h, terms) in zip(axes, panels):
        n = max((len(v) for v in h.values()), default=1)
        epochs = np.arange(1, n + 1)
        if terms is None:
            for key in ("accuracy", "val_accuracy"):
                if key in h:
                    val = key.startswith("val_")
                    ax.plot(epochs[: len(h[key])], h[key], "s--" if val else "o-", ms=4,
                            color="#ff7f0e" if val else "#1f77b4", mfc="white" if val else None,
                            label="val" if val else "train")
            ax.set_ylabel("accuracy")
        else:
            _plot_terms(ax, h, terms, epochs)
            ax.set_ylabel("loss")
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        _legend_below(ax)
        _integer_epochs(ax, n)
    return fig


def reliability_diagrams(entries, num_bins):
    """One reliability diagram (top) and confidence histogram (bottom) per model.

    Args:
        entries: list of `(label, bin_confidence, bin_accuracy, bin_count, ece)`
            as `kdtf.metrics.reliability_curve` returns them.
        num_bins: the number of equal-width bins.
    """
    n = len(entries)
    fig = _figure(3.4 * n + 0.4, 6.2)
    axes = fig.subplots(2, n, squeeze=False, sharex=True, height_ratios=[2.2, 1])
    edges = np.linspace(0, 1, num_bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / num_bins
    for i, (label, conf, acc, count, ece) in enumerate(entries):
        ax, hist = axes[0, i], axes[1, i]
        acc0 = np.nan_to_num(acc)
        ax.bar(centers, acc0, width=width * 0.95, color=COLORS[i % len(COLORS)], alpha=0.8,
               label="accuracy")
        gap = np.where(count > 0, np.nan_to_num(conf) - acc0, 0.0)
        ax.bar(centers, gap, bottom=acc0, width=width * 0.95, color="none", edgecolor="#d62728",
               hatch="//", linewidth=0.8, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{label}\nECE {ece:.3f}", fontsize=10)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel("accuracy in bin")
            ax.legend(fontsize=7, loc="upper left")
        hist.bar(centers, count, width=width * 0.95, color=COLORS[i % len(COLORS)], alpha=0.6)
        hist.set_xlabel("confidence (max probability)")
        hist.grid(alpha=0.3)
        if i == 0:
            hist.set_ylabel("examples")
    return fig


def per_class_accuracy(labels, accuracies, counts):
    """Per-class accuracy of every model (grouped bars, or lines past 20 classes).

    Args:
        labels: model labels.
        accuracies: one `[C]` array per model.
        counts: `[C]` examples per class.
    """
    c = len(counts)
    fig = _figure(min(16, max(8, 0.75 * c + 3)), 3.8)
    ax = fig.subplots()
    x = np.arange(c)
    if c <= MAX_ANNOTATED_CLASSES:
        w = 0.8 / len(labels)
        for i, (label, acc) in enumerate(zip(labels, accuracies)):
            ax.bar(x - 0.4 + w * (i + 0.5), np.nan_to_num(acc), width=w, label=label,
                   color=COLORS[i % len(COLORS)])
        ax.set_xticks(x, [str(k) for k in x])
    else:
        for i, (label, acc) in enumerate(zip(labels, accuracies)):
            ax.plot(x, acc, ".-", lw=0.8, label=label, color=COLORS[i % len(COLORS)])
    ax.set_xlabel("class (test examples per class in the table below)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def confusion(matrix, title, row_label="teacher prediction", col_label="student prediction"):
    """A confusion-matrix heatmap; cells annotated up to 20 classes."""
    from matplotlib.colors import LogNorm

    c = matrix.shape[0]
    side = min(9, max(4.5, 0.4 * c + 1.4))
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    shown = np.where(matrix > 0, matrix, np.nan)
    vmax = max(int(matrix.max()), 1)
    im = ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(vmax, 2)), interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="examples (log scale)")
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title, fontsize=10)
    if c <= MAX_ANNOTATED_CLASSES:
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        threshold = np.sqrt(vmax)  # the middle of the log colour scale
        for i in range(c):
            for j in range(c):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                            fontsize=8 if c <= 12 else 6,
                            color="white" if matrix[i, j] > threshold else "black")
    return fig


def efficiency(labels, mflops, accuracies, sizes_kib=None, ylabel="test accuracy"):
    """Test accuracy against MFLOPs (log x axis), one point per model, named in the legend."""
    fig = _figure(8, 3.6 + 0.22 * len(labels))
    ax = fig.subplots()
    markers = "os^DvP*X"
    for i, (label, x, y) in enumerate(zip(labels, mflops, accuracies)):
        if sizes_kib is not None and sizes_kib[i] is not None:
            label = f"{label}: {x:.3g} MFLOPs, {sizes_kib[i]:.1f} KiB TFLite"
        else:
            label = f"{label}: {x:.3g} MFLOPs"
        ax.scatter([x], [y], s=80, marker=markers[i % len(markers)], color=COLORS[i % len(COLORS)],
                   zorder=3, label=label, edgecolors="white", linewidths=0.8)
    ax.set_xscale("log")
    lo, hi = min(mflops), max(mflops)
    ax.set_xlim(lo / 2, hi * 2)
    ys = np.asarray(accuracies, dtype=float)
    pad = max(0.05, (ys.max() - ys.min()) * 0.3)
    ax.set_ylim(max(0.0, ys.min() - pad), min(1.02, ys.max() + pad))
    ax.set_xlabel("MFLOPs per example (2 x multiply-accumulates, log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    fig.legend(fontsize=8, loc="outside lower center", ncols=1, frameon=False)
    return fig
