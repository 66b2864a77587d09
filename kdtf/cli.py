"""What every app in `apps/` shares: quiet start-up and running `main` with clean errors.

Apps stay thin: they define absl flags, call `kdtf.cli.run(main)`, and pass the
flag values into the library. Bad input raised by the library (ValueError,
FileNotFoundError, ...) ends the app with status 1 and a one-line message on
stderr instead of a traceback; a flag that does not parse or validate ends it
with status 2 and a one-line message naming the flag. Ctrl-C ends it with
status 130 and one line saying how to resume; so does a multi-worker run whose
peer worker died (status 1).

TensorFlow's start-up noise (absl pre-init warnings, oneDNN and CPU-feature
notices, "Could not find cuda drivers", a failed cuInit on a machine without a
GPU, LiteRT's XNNPACK notice) is dropped by `quiet_tensorflow`, which must run
before TensorFlow is imported (`import kdtf` runs it); set `KDTF_TF_LOGS=1` to
see everything.

Example:

```python
from kdtf import cli

def main(argv):
    ...

if __name__ == "__main__":
    cli.run(main)
```
"""
import contextlib
import importlib.util
import json
import os
import re
import sys
import tempfile

# Errors that mean "the user asked for something wrong", not "kdtf is broken".
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError)

INTERRUPTED = ("interrupted (Ctrl-C); rerun the same command to resume from the last finished "
               "epoch (finished epochs, students and results are kept).")
PEER_FAILED = ("a worker of this multi-worker run stopped or cannot be reached ({reason}); rerun "
               "the same command on every worker to resume from the last finished epoch.")

# Lines TensorFlow and LiteRT print on every start on stderr that say nothing
# about the run (TF_CPP_MIN_LOG_LEVEL does not reach the ones printed before
# absl's logging is initialized). Anything else is passed through.
NATIVE_NOISE = tuple(re.compile(p) for p in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^[IW]\d{4} [\d:.]+ +\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\] ",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler "
    r"flags\.$",
    r"^E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ",
    r"^E\d{4} [\d:.]+ +\d+ cuda_(dnn|fft|blas)\.cc:\d+\] Unable to register cu\w+ factory: ",
    r"^W\d{4} [\d:.]+ +\d+ cuda_executor\.cc:\d+\] ",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
    r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
    r"output_inference_type: \w+$",
))


def is_noise(line):
    """Whether one stderr line is TensorFlow/LiteRT start-up noise (`NATIVE_NOISE`).

    Args:
        line: One line of text, with or without its newline.

    Returns:
        True for a line `filtered_stderr` drops.

    Example:

    >>> is_noise("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    True
    """
    line = line.rstrip("\r\n")
    return any(p.search(line) for p in NATIVE_NOISE)


@contextlib.contextmanager
def filtered_stderr():
    """Drops TensorFlow/LiteRT noise written to file descriptor 2 inside the block.

    Native libraries write to the file descriptor, not to `sys.stderr`, so
    the descriptor is pointed at a temporary file for the block; when it ends
    (also by an exception or Ctrl-C) every line that is not `is_noise` is
    written to the real stderr, in order. Does nothing when `KDTF_TF_LOGS` is
    set or stderr has no file descriptor.

    Example:

    >>> with filtered_stderr():
    ...     import tensorflow  # doctest: +SKIP
    """
    if os.environ.get("KDTF_TF_LOGS"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    capture = tempfile.TemporaryFile()
    try:
        os.dup2(capture.fileno(), 2)
        yield
    finally:
        for stream in (sys.stderr, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", errors="replace")
        capture.close()
        kept = "".join(l for l in text.splitlines(keepends=True) if not is_noise(l))
        if kept:
            os.write(2, kept.encode("utf-8"))


def _tensorflow_backend():
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    return backend == "tensorflow" and importlib.util.find_spec("tensorflow") is not None


def set_log_levels():
    """Sets `TF_CPP_MIN_LOG_LEVEL=2` (C++ errors only) unless the environment sets it.

    Only takes effect before TensorFlow is imported.

    Example:

    >>> set_log_levels()
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def quiet_tensorflow(devices=False):
    """Sets TensorFlow's log levels and imports it with its start-up noise dropped.

    Must run before anything imports TensorFlow (Keras with its TensorFlow
    backend does) to have its full effect: `set_log_levels`, then
    `import tensorflow` inside `filtered_stderr`; with `devices=True` the
    physical devices are listed there too (the first CUDA initialization
    prints a failed cuInit on machines without a GPU). Nothing is imported on
    another Keras backend or where TensorFlow is missing. Idempotent.

    Args:
        devices: also initialize the device list quietly (the apps do).

    Example:

    >>> quiet_tensorflow()
    """
    set_log_levels()
    if not _tensorflow_backend():
        return
    if "tensorflow" not in sys.modules or devices:
        with filtered_stderr():
            import tensorflow as tf

            if devices:
                tf.config.list_physical_devices()


def user_errors():
    """The exception types reported as one-line errors (incl. kdtf's own)."""
    from kdtf.callbacks import NonFiniteLossError

    extra = [NonFiniteLossError]
    try:
        from kdtf.data import DatasetNotAvailableError

        extra.append(DatasetNotAvailableError)
    except ImportError:  # pragma: no cover
        pass
    return USER_ERRORS + tuple(extra)


def _multi_worker():
    """Whether TF_CONFIG describes a cluster of more than one task."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "") or "{}").get("cluster", {})
        return sum(len(tasks) for tasks in cluster.values()) > 1
    except (ValueError, AttributeError, TypeError):
        return False


def peer_failure(error):
    """Whether `error` is TensorFlow saying a peer worker of a multi-worker run is gone.

    Args:
        error: an exception.

    Returns:
        True for an `UnavailableError`, `DeadlineExceededError` or
        `AbortedError` (or a collective-op failure) while `TF_CONFIG` names
        more than one task.

    Example:

    >>> peer_failure(ValueError("x"))
    False
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not _multi_worker() or not isinstance(error, tf.errors.OpError):
        return False
    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)
    return isinstance(error, lost) or "collective" in str(error).lower()


def _first_line(error):
    text = str(getattr(error, "message", "") or error).strip().splitlines()
    line = " ".join(text[0].split()) if text else ""
    return f"{type(error).__name__}: {line[:160]}" if line else type(error).__name__


def run(main, interrupted=INTERRUPTED):
    """Runs `main(argv)` under absl with one-line errors for bad input.

    Args:
        main: the app's `main(argv)`.
        interrupted: the line printed when Ctrl-C stops the app (status 130);
            by default it says that rerunning the same command resumes from
            the last finished epoch.

    Example:

    >>> run(main)  # doctest: +SKIP
    """
    from absl import app, flags

    def _parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:  # one line, status 2, no usage dump
            fail(e, status=2)

    def _main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; flags are written --name=value (see --help).")
        try:
            from absl import logging

            if not flags.FLAGS["verbosity"].present:
                # absl INFO lines of TensorFlow's SavedModel code (the export): warnings up.
                logging.set_verbosity(logging.WARNING)
            if "tensorflow" in sys.modules:
                # Python-side TensorFlow warnings (absl logging): errors only.
                sys.modules["tensorflow"].get_logger().setLevel("ERROR")
            return main(argv)
        except KeyboardInterrupt:
            fail(interrupted, status=130)
        except user_errors() as e:
            fail(str(e) if not isinstance(e, KeyError) else f"missing key {e}")
        except Exception as e:
            if peer_failure(e):
                fail(PEER_FAILED.format(reason=_first_line(e)))
            raise

    # Once, before absl starts: TensorFlow registers an absl start-up callback
    # that lists the GPUs (tf.distribute's combinations), so they are listed
    # quietly first (a no-op on another Keras backend).
    quiet_tensorflow(devices=True)
    try:
        app.run(_main, flags_parser=_parse_flags)
    except KeyboardInterrupt:  # during flag parsing or absl's start-up
        fail(interrupted, status=130)
    except SystemExit as e:
        # absl exits with status 1 after printing --help; asking for help is
        # not an error.
        if e.code == 1 and any(a in ("--help", "-h", "--helpshort", "--helpfull") for a in sys.argv[1:]):
            sys.exit(0)
        raise


def fail(message, status=1):
    """Prints `error: message` on one line to stderr and exits with `status`."""
    message = " ".join(str(message).split())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


# Before TensorFlow loads where nothing imported it before kdtf.cli.
set_log_levels()


def define_flags(config_cls, names=None, defaults=None, flag_values=None):
    """Defines one absl flag per field of the dataclass `config_cls`.

    Each field's `metadata` gives the flag's help (`"help"`), choices
    (`"choices"`: an enum flag), bounds (`"lower_bound"`, `"upper_bound"`) and,
    where the default is None, its type (`"type"`); a tuple or list field is a
    comma-separated list flag. A field without a default is a required flag.
    `"check"` is a function that raises ValueError for a bad value: it becomes
    the flag's validator (a bad value exits with status 2 naming the flag, at
    parse time); with `"check_with": (names...)` it is called with the values
    of those flags too, `check(value, *others)`. Required flags are checked
    first, then the checks in the order of the fields. The flags then have
    the library's defaults by construction (`pipeline.experiment.RunConfig`).

    Args:
        config_cls: a dataclass whose fields carry that metadata.
        names: the fields to define (default: all).
        defaults: `{name: value}` defaults that differ for this app.
        flag_values: the `absl.flags.FlagValues` (default: `absl.flags.FLAGS`).

    Returns:
        The names of the defined flags.

    Example:

    >>> define_flags(pipeline.experiment.RunConfig)
    """
    import dataclasses

    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    defaults = defaults or {}
    defined, required = [], []
    # The flags belong to the calling app (its --helpshort lists them), as absl
    # attributes flags to the module that defines them.
    module = sys._getframe(1).f_globals.get("__name__", "")
    module_name = sys.argv[0] if module == "__main__" else module
    own = {"flag_values": flag_values, "module_name": module_name}
    fields = [f for f in dataclasses.fields(config_cls) if names is None or f.name in names]
    for field in fields:
        meta = field.metadata
        if field.name in defaults:
            default = defaults[field.name]
        elif field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = None
            required.append(field.name)
        help_text = meta.get("help", field.name)
        kind = meta.get("type", field.type)
        bounds = {k: meta[k] for k in ("lower_bound", "upper_bound") if k in meta}
        if "choices" in meta:
            flags.DEFINE_enum(field.name, default, list(meta["choices"]), help_text, **own)
        elif kind is bool:
            flags.DEFINE_bool(field.name, default, help_text, **own)
        elif kind is int:
            flags.DEFINE_integer(field.name, default, help_text, **own, **bounds)
        elif kind is float:
            flags.DEFINE_float(field.name, default, help_text, **own, **bounds)
        elif kind in (tuple, list):
            flags.DEFINE_list(field.name, None if default is None else list(default), help_text,
                              **own)
        else:
            flags.DEFINE_string(field.name, default, help_text, **own)
        defined.append(field.name)
    for name in required:
        flags.mark_flag_as_required(name, flag_values=flag_values)
    for field in fields:
        check, others = field.metadata.get("check"), tuple(field.metadata.get("check_with", ()))
        if check is not None and all(n in flag_values for n in others):
            _register_check(flags, flag_values, [field.name, *others], check)
    return defined


def _register_check(flags, flag_values, names, check):
    """Registers `check(*values of names)` (raises ValueError) as an absl validator."""
    def verify(values):
        try:
            check(*(values[n] for n in names))
        except ValueError as e:
            raise flags.ValidationError(str(e)) from e
        return True

    if len(names) == 1:
        flags.register_validator(names[0], lambda value: verify({names[0]: value}),
                                 flag_values=flag_values)
    else:
        flags.register_multi_flags_validator(names, verify, flag_values=flag_values)


def check_fields(config):
    """Raises ValueError for the first field of `config` that its flag would reject.

    Checks what `define_flags` makes the flags check: choices, bounds and the
    fields' `"check"` functions, so that a config built in Python is held to
    the app's rules. The message names the flag as absl's does
    (`flag --name=value: ...`).

    Args:
        config: an instance of a dataclass with `define_flags` metadata.

    Returns:
        `config`.
    """
    import dataclasses

    for field in dataclasses.fields(config):
        meta, value = field.metadata, getattr(config, field.name)
        where = f"flag --{field.name}={value}"
        if "choices" in meta and value not in meta["choices"]:
            raise ValueError(f"{where}: value should be one of <{'|'.join(meta['choices'])}>")
        lower, upper = meta.get("lower_bound"), meta.get("upper_bound")
        if value is not None and ((lower is not None and value < lower)
                                  or (upper is not None and value > upper)):
            raise ValueError(f"{where}: {value} is not in the range "
                             f"[{'-inf' if lower is None else lower}, "
                             f"{'inf' if upper is None else upper}]")
    for field in dataclasses.fields(config):
        check, others = field.metadata.get("check"), tuple(field.metadata.get("check_with", ()))
        if check is None:
            continue
        names = [field.name, *others]
        try:
            check(*(getattr(config, n) for n in names))
        except ValueError as e:
            where = (f"flag --{field.name}={getattr(config, field.name)}" if not others else
                     "flags " + ", ".join(f"{n}={getattr(config, n)}" for n in names))
            raise ValueError(f"{where}: {e}") from e
    return config


def validated(config):
    """`config.validate()`, where a ValueError ends the app as a bad flag does (status 2).

    Args:
        config: a config built by `config_from_flags`.

    Returns:
        What `validate()` returns.
    """
    try:
        return config.validate()
    except ValueError as e:
        fail(e, status=2)


def config_from_flags(config_cls, names=None, flag_values=None, **overrides):
    """The `config_cls` instance of the parsed flags that `define_flags` made.

    List flags become tuples where the field is a tuple.

    Args:
        config_cls: the dataclass.
        names: the fields taken from flags (default: all); the others keep
            their defaults.
        flag_values: the `absl.flags.FlagValues` (default: `absl.flags.FLAGS`).
        **overrides: fields set here rather than from flags.

    Returns:
        A `config_cls`.
    """
    import dataclasses

    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    settings = {}
    for f in dataclasses.fields(config_cls):
        if (names is None or f.name in names) and f.name in flag_values:
            value = flag_values[f.name].value
            if f.metadata.get("type", f.type) is tuple and isinstance(value, list):
                value = tuple(value)
            settings[f.name] = value
    settings.update(overrides)
    return config_cls(**settings)
