"""What every app in `apps/` shares: running `main` with clean errors.

Apps stay thin: they define absl flags, call `kdtf.cli.run(main)`, and pass the
flag values into the library. Bad input raised by the library (ValueError,
FileNotFoundError, ...) ends the app with status 1 and a one-line message on
stderr instead of a traceback; flag syntax errors are absl's (status 1).
"""
import os
import sys

# Quiet TensorFlow's C++ start-up logs before it is imported by the apps.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Errors that mean "the user asked for something wrong", not "kdtf is broken".
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError)


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


def run(main):
    """Runs `main(argv)` under absl with one-line errors for bad input.

    Args:
        main: the app's `main(argv)`.
    """
    from absl import app

    def _main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; flags are written --name=value (see --help).")
        try:
            return main(argv)
        except user_errors() as e:
            fail(str(e) if not isinstance(e, KeyError) else f"missing key {e}")

    app.run(_main)


def fail(message):
    """Prints `error: message` on one line to stderr and exits with status 1."""
    message = " ".join(str(message).split())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)
