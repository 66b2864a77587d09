"""A plain PyTorch knowledge-distillation loop, timed like apps/benchmark.py.

The reference point for kdtf's GPU figures: the pair of the prepared GPU
benchmark (CIFAR ResNet-32x4 teacher -> ResNet-8x4 student, random uint8
32x32x3 images, 100 classes, batch 256), written the way a PyTorch user
would write it for speed: bfloat16 autocast, channels_last, `torch.compile`,
fused Adam on CUDA. It is not part of kdtf and does not import it.

The models have the layout and the parameter counts of `kdtf.models`'
resnet8x4 / resnet32x4 (3x3 convs without bias, padding 1, BatchNorm, 1x1
conv + BatchNorm shortcuts, global average pooling, a linear classifier):
PyTorch's parameters are Keras's trainable weights, and the BatchNorm running
statistics (buffers here) are Keras's non-trainable ones; both are printed
and written to the report.

Timed configurations ("modes"):

* `kd`: a KD training step, the same objective as kdtf's benchmark:
  0.5 * cross-entropy(labels) + 0.5 * tau^2 * KL(softmax(t / tau) ||
  softmax(s / tau)), tau = 4; the teacher runs in eval mode under no_grad;
* `student`: the student's training step on labels alone;
* `teacher`: the teacher's forward pass alone (eval mode, no_grad).

Inputs are one ready uint8 NHWC batch on the device, repeated (kdtf's
`memory` inputs); each step converts it to float, scales it by 1/255 and
views it as NCHW inside the (compiled) step. Every measurement runs `steps`
steps, the first untimed, then synchronises the device; images/s is the
median over `rounds` rounds, each timing every mode once in the same order
(A B C A B C). Compilation happens in an untimed warm-up.

A time budget (`--time_budget_s`) keeps the script inside the one GPU call:
a mode whose warm-up would start after 60% of the budget is dropped, and
no round starts that would end past the budget (the report says so, and
its JSON has "complete": false). On SIGTERM (`timeout`) the rounds done so
far are written before exiting.

    python benchmarks/torch_kd.py --output=/tmp/torch_kd.md
    python benchmarks/torch_kd.py --device=cpu --no-compile --amp=none \
        --batch_size=8 --steps=3 --rounds=1 --output=/tmp/t.md
"""
import argparse
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

TEMPERATURE = 4.0
STUDENT_LOSS_WEIGHT = 0.5
MODES = ("kd", "student", "teacher")
ROW_NAMES = {"kd": "PyTorch KD", "student": "PyTorch student only",
             "teacher": "PyTorch teacher inference"}
# name -> (depth, widths): stem, stage 1, stage 2, stage 3 (as kdtf.models.resnet).
ARCHITECTURES = {
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
}


# ------------------------------------------------------------------ models
class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and an identity or 1x1 conv-BN shortcut, post-activation.

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: stride of the first conv and of the shortcut.
    """

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet of depth 6n + 2 (kdtf.models.resnet's layout).

    Args:
        depth: 6n + 2.
        widths: 4 widths: stem, stage 1, stage 2, stage 3 (strides 1, 2, 2).
        num_classes: classes of the linear classifier.

    Example:
        >>> model = CifarResNet(8, (32, 64, 128, 256), num_classes=100)
    """

    def __init__(self, depth, widths, num_classes=100):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1; got {depth}.")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        blocks, in_planes = [], widths[0]
        for planes, stride in zip(widths[1:], (1, 2, 2)):
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():  # He-normal on fan-out, as kdtf.models.blocks
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(name, num_classes=100):
    """A `CifarResNet` by its kdtf.models name (a key of `ARCHITECTURES`)."""
    depth, widths = ARCHITECTURES[name]
    return CifarResNet(depth, widths, num_classes)


def parameter_counts(model):
    """`{"trainable": ..., "buffers": ..., "total": ...}`; total = Keras's count_params().

    Buffers are the BatchNorm running means and variances (Keras's
    non-trainable weights); BatchNorm's `num_batches_tracked` counters have
    no Keras counterpart and are left out.
    """
    trainable = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))
    return {"trainable": trainable, "buffers": buffers, "total": trainable + buffers}


# ------------------------------------------------------------------ steps
def _images(x_uint8, channels_last):
    """uint8 NHWC -> float NCHW in [0, 1]; channels_last keeps the NHWC memory layout."""
    x = x_uint8.permute(0, 3, 1, 2)  # an NCHW view with channels_last strides
    if not channels_last:
        x = x.contiguous()
    return x.float().div_(255.0)


def kd_loss(student_logits, teacher_logits, labels, temperature=TEMPERATURE,
            student_loss_weight=STUDENT_LOSS_WEIGHT):
    """w * CE(labels, s) + (1 - w) * tau^2 * KL(softmax(t / tau) || softmax(s / tau)), batch mean."""
    s, t = student_logits.float(), teacher_logits.float()
    task = F.cross_entropy(s, labels)
    log_p_s = F.log_softmax(s / temperature, dim=-1)
    log_p_t = F.log_softmax(t / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return student_loss_weight * task + (1 - student_loss_weight) * temperature ** 2 * kl


class Runner:
    """One timed mode: a (compiled) step function and how to run it."""

    def __init__(self, mode, teacher, student, args, device):
        self.mode, self.args, self.device = mode, args, device
        self.name = ROW_NAMES[mode]
        self.ips, self.device_peak_mib = [], []
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
        cl = args.channels_last

        def autocast():
            return torch.autocast(device.type, dtype=amp, enabled=amp is not None)

        def kd_forward(x, y):
            with autocast():
                images = _images(x, cl)
                with torch.no_grad():
                    t = teacher(images)
                return kd_loss(student(images), t, y)

        def student_forward(x, y):
            with autocast():
                return F.cross_entropy(student(_images(x, cl)).float(), y)

        def teacher_forward(x, y):
            del y
            with torch.no_grad(), autocast():
                return teacher(_images(x, cl)).float()

        forward = {"kd": kd_forward, "student": student_forward, "teacher": teacher_forward}[mode]
        if args.compile:
            forward = torch.compile(forward, mode=args.compile_mode)
        self.forward = forward
        self.optimizer = None
        if mode != "teacher":
            fused = device.type == "cuda"
            self.optimizer = torch.optim.Adam(student.parameters(), lr=1e-3, fused=fused)

    def step(self, x, y):
        if self.optimizer is None:
            return self.forward(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward(x, y)
        loss.backward()
        self.optimizer.step()
        return loss

    def run(self, steps, x, y):
        """Runs `steps` steps; returns images/s over all but the first."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.step(x, y)
        sync()
        start = time.perf_counter()
        for _ in range(steps - 1):
            out = self.step(x, y)
            del out
        sync()
        seconds = time.perf_counter() - start
        if self.device.type == "cuda":
            self.device_peak_mib.append(torch.cuda.max_memory_allocated() / 2**20)
        return x.shape[0] * (steps - 1) / seconds


# ------------------------------------------------------------------ report
def _median(values):
    return statistics.median(values) if values else float("nan")


def _accelerator(device):
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return "none (CPU)"


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _rows(runners, batch_size):
    rows = []
    for r in runners:
        ips = _median(r.ips)
        rows.append({
            "name": r.name, "input": "memory", "note": r.note, "images_per_s": ips,
            "step_ms": 1000 * batch_size / ips if ips == ips and ips > 0 else None,
            "images_per_s_rounds": list(r.ips), "peak_rss_mib": None, "rss_growth_mib": None,
            "device_peak_mib": max(r.device_peak_mib) if r.device_peak_mib else None,
        })
    return rows


def _ratios(runners, args, keras_result=None):
    by_mode = {r.mode: r for r in runners}
    out = []

    def add(name, fn, *modes):
        if all(m in by_mode and by_mode[m].ips for m in modes):
            rounds = [fn(*v) for v in zip(*(by_mode[m].ips for m in modes))]
            out.append({"name": name, "median": _median(rounds), "rounds": rounds})

    add("PyTorch KD share of the bound 1/(1/student + 1/teacher)",
        lambda k, s, t: k * (1.0 / s + 1.0 / t), "kd", "student", "teacher")
    kd = by_mode.get("kd")
    if keras_result is not None and kd is not None and kd.ips:
        batch = keras_result.get("settings", {}).get("batch_size")
        for pair in keras_result.get("pairs", {}).values():
            if (pair.get("teacher"), pair.get("student"), batch) != (
                    args.teacher, args.student, args.batch_size):
                continue  # another pair or batch size: no ratio
            for row in pair.get("rows", []):
                if row["name"] in ("kdtf KD", "keras.distillation KD") and row["input"] == "memory":
                    # Separate processes, so a ratio of medians, not of rounds.
                    out.append({"name": f"{row['name']} (Keras run) / PyTorch KD (images/s, "
                                        "ratio of medians)",
                                "median": row["images_per_s"] / _median(kd.ips), "rounds": []})
    return out


def result_dict(args, runners, device, teacher_counts, student_counts, seconds, complete,
                stopped="", keras_result=None):
    """The JSON-able result, in the layout of benchmarks.benchmark's (one pair, "cifar")."""
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "compare")}
    rounds_done = min((len(r.ips) for r in runners), default=0)
    return {
        "settings": settings, "backend": "pytorch", "complete": complete, "stopped": stopped,
        "machine": {"cpu": _cpu(), "cores": len(os.sched_getaffinity(0))},
        "accelerator": _accelerator(device),
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
                     else None, "python": platform.python_version()},
        "memory": "device: torch.cuda.max_memory_allocated per measurement; process peak RSS "
                  f"(lifetime) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB",
        "pairs": {"cifar": {
            "teacher": args.teacher, "student": args.student, "input_dtype": "uint8",
            "teacher_params": teacher_counts["total"], "student_params": student_counts["total"],
            "teacher_param_counts": teacher_counts, "student_param_counts": student_counts,
            "data": f"one random uint8 batch of {args.batch_size} 32x32x3 images, 100 classes, "
                    "repeated (on the device)",
            "rounds_done": rounds_done, "rows": _rows(runners, args.batch_size),
            "ratios": _ratios(runners, args, keras_result),
        }},
        "seconds": seconds,
    }


def to_markdown(result, command):
    """A short markdown report in the style of benchmarks.benchmark.to_markdown."""
    s, p, v = result["settings"], result["pairs"]["cifar"], result["versions"]
    lines = [
        "# Benchmark: plain PyTorch KD loop", "",
        f"Produced by `{command}` in {result['seconds'] / 60:.1f} min.", "",
        "| setting | value |", "|---|---|",
        f"| machine | {result['machine']['cpu']}, {result['machine']['cores']} cores; accelerator: "
        f"{result['accelerator']} |",
        f"| versions | PyTorch {v['torch']}, CUDA {v['cuda']}, cuDNN {v['cudnn']}, Python {v['python']} |",
        f"| batch size | {s['batch_size']} |",
        f"| autocast / channels_last / torch.compile | {s['amp']} / {s['channels_last']} / "
        + (f"mode={s['compile_mode']}" if s["compile"] else "off") + " |",
        f"| timing | median of {p['rounds_done']} of {s['rounds']} rounds; each round times every "
        f"mode once (A B C ...); {s['steps']} steps per measurement, first untimed; compilation "
        "in an untimed warm-up |",
        "| loss | 0.5 * cross-entropy + 0.5 * tau^2 * KL, tau = 4; Adam (fused on CUDA) |",
    ]
    if not result["complete"]:
        lines += ["", f"**Incomplete: {result['stopped']}**"]
    lines += [
        "", f"## cifar: {p['teacher']} -> {p['student']}", "",
        f"Teacher {p['teacher_params']:,} parameters ({p['teacher_param_counts']['trainable']:,} "
        f"trainable), student {p['student_params']:,} ({p['student_param_counts']['trainable']:,} "
        f"trainable); data: {p['data']}.", "",
        "| configuration | input | images/s (median) | step ms | images/s per round | device peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    fmt = lambda x, d=0: "-" if x is None else f"{x:,.{d}f}"  # noqa: E731
    for row in p["rows"]:
        name = row["name"] + (f" ({row['note']})" if row["note"] else "")
        lines.append(f"| {name} | {row['input']} | {fmt(row['images_per_s'])} | "
                     f"{fmt(row['step_ms'], 1)} | "
                     + ", ".join(fmt(x) for x in row["images_per_s_rounds"])
                     + f" | {fmt(row['device_peak_mib'])} |")
    if p["ratios"]:
        lines += ["", "| ratio | median | per round |", "|---|---|---|"]
        for r in p["ratios"]:
            lines.append(f"| {r['name']} | {r['median']:.2f} | "
                         + (", ".join(f"{x:.2f}" for x in r["rounds"]) or "-") + " |")
    return "\n".join(lines) + "\n"


def _write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


# ------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", default="resnet32x4", choices=sorted(ARCHITECTURES))
    p.add_argument("--student", default="resnet8x4", choices=sorted(ARCHITECTURES))
    p.add_argument("--modes", default="kd,student,teacher",
                   help="comma-separated, from " + ", ".join(MODES) + " (warmed up in this order)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--steps", type=int, default=200, help="steps per measurement (first untimed)")
    p.add_argument("--warmup_steps", type=int, default=20, help="untimed steps (compilation) per mode")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"],
                   help="autocast dtype ('none': float32)")
    p.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.compile each step's forward and loss (backward via AOTAutograd)")
    p.add_argument("--compile_mode", default="default",
                   choices=["default", "reduce-overhead", "max-autotune",
                            "max-autotune-no-cudagraphs"])
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time_budget_s", type=float, default=0.0,
                   help="stop within this many seconds (0: no limit); see the module docstring")
    p.add_argument("--compare", default="",
                   help="a kdtf benchmark JSON (apps/benchmark.py --output): adds the ratios of its "
                        "kdtf KD and keras.distillation KD to this KD, where its pair and batch "
                        "size are these")
    p.add_argument("--output", default="", help="markdown report here and the JSON beside it")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if not modes or bad or len(set(modes)) != len(modes):
        p.error(f"--modes: give distinct values from {', '.join(MODES)}; got {args.modes!r}")
    args.modes = modes
    for name, minimum in (("batch_size", 2), ("steps", 2), ("warmup_steps", 1), ("rounds", 1)):
        if getattr(args, name) < minimum:
            p.error(f"--{name} must be >= {minimum}; got {getattr(args, name)}")
    if args.time_budget_s < 0:
        p.error(f"--time_budget_s must be >= 0; got {args.time_budget_s}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device=cuda: no CUDA device is available here; use --device=cpu or auto")
    if args.compare and not os.path.isfile(args.compare):
        p.error(f"--compare: no file {args.compare!r}")
    return args


class _Stop(Exception):
    pass


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    elapsed = lambda: time.perf_counter() - start  # noqa: E731
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    teacher = build(args.teacher).to(device, memory_format=memory_format).eval()
    teacher.requires_grad_(False)
    student = build(args.student).to(device, memory_format=memory_format).train()
    counts_t, counts_s = parameter_counts(teacher), parameter_counts(student)
    for name, c in ((args.teacher, counts_t), (args.student, counts_s)):
        log(f"{name}: {c['trainable']:,} parameters + {c['buffers']:,} BatchNorm statistics "
            f"= {c['total']:,} (Keras count_params)")
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randint(0, 256, (args.batch_size, 32, 32, 3), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, 100, (args.batch_size,), generator=g).to(device)
    keras_result = None
    if args.compare:
        with open(args.compare) as f:
            keras_result = json.load(f)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    state = {"runners": [], "complete": False, "stopped": ""}

    def report():
        result = result_dict(args, state["runners"], device, counts_t, counts_s, elapsed(),
                             state["complete"], state["stopped"], keras_result)
        if args.output:
            _write(args.output, to_markdown(result, command))
            _write(os.path.splitext(args.output)[0] + ".json", json.dumps(result, indent=1))
        return result

    def on_term(signum, frame):
        raise _Stop(f"stopped by signal {signum} after {elapsed():.0f} s")

    signal.signal(signal.SIGTERM, on_term)
    budget = args.time_budget_s
    try:
        for mode in args.modes:
            if budget and state["runners"] and elapsed() > 0.6 * budget:
                state["stopped"] = (f"mode {mode!r} dropped: its warm-up would start after "
                                    f"{elapsed():.0f} s of the {budget:.0f} s budget")
                log(state["stopped"])
                continue
            runner = Runner(mode, teacher, student, args, device)
            runner.note = {"kd": "teacher eval + no_grad", "teacher": "forward only, eval, no_grad",
                           "student": "labels only"}[mode]
            t0 = time.perf_counter()
            runner.run(max(args.warmup_steps, 2), x, y)
            log(f"warm-up {runner.name}: {time.perf_counter() - t0:.1f} s")
            state["runners"].append(runner)
        round_seconds = 0.0
        for r in range(args.rounds):
            if budget and r and elapsed() + round_seconds > budget:
                state["stopped"] = (f"{r} of {args.rounds} rounds: another round "
                                    f"({round_seconds:.0f} s) would end past the {budget:.0f} s budget")
                log(state["stopped"])
                break
            t0 = time.perf_counter()
            for runner in state["runners"]:
                ips = runner.run(args.steps, x, y)
                runner.ips.append(ips)
                log(f"round {r + 1}/{args.rounds} {runner.name}: {ips:,.0f} images/s")
            round_seconds = time.perf_counter() - t0
            report()
        state["complete"] = not state["stopped"]
    except (_Stop, KeyboardInterrupt) as e:
        state["stopped"] = str(e) or "interrupted"
        log(state["stopped"])
    result = report()
    p = result["pairs"]["cifar"]
    for row in p["rows"]:
        log(f"{row['name']:<28}{row['images_per_s']:>10,.0f} images/s")
    for ratio in p["ratios"]:
        log(f"{ratio['name']:<72}{ratio['median']:>7.2f}")
    if args.output:
        print(f"report: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
