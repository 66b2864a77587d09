"""What every app in `apps/` shares: running `main` with clean errors.

Apps stay thin: they define absl flags, call `kdtf.cli.run(main)`, and pass the
flag values into the library. Bad input raised by the library (ValueError,
FileNotFoundError, ...) ends the app with status 1 and a one-line message on
stderr instead of a traceback; a flag that does not parse or validate ends it
with status 2 and a one-line message naming the flag.
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
            return main(argv)
        except user_errors() as e:
            fail(str(e) if not isinstance(e, KeyError) else f"missing key {e}")

    try:
        app.run(_main, flags_parser=_parse_flags)
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
