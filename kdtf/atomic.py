"""Atomic writes of files and directories.

Every artifact kdtf writes (TFLite flatbuffers, SavedModels, and later
checkpoints) goes through `atomic_path`: the content is written to a
temporary sibling of the destination, flushed to disk with `fsync`, and only
then moved into place with a single rename. A reader therefore sees either
the old artifact, the complete new artifact, or nothing; never a partial
file. An existing destination is only replaced when `overwrite=True`.
"""

import contextlib
import os
import shutil
import tempfile

# How every refusal to replace an existing artifact says what to do.
OVERWRITE_HINT = "pass overwrite=True (--overwrite in the apps) to replace it"


def check_destination(path, overwrite=False):
    """Raises `FileExistsError` if `path` exists and `overwrite` is False.

    Also checks that the parent directory of `path` exists, so that errors
    are raised before any expensive work (such as a TFLite conversion).

    Args:
        path: Destination file or directory path.
        overwrite: Whether an existing destination may be replaced.

    Returns:
        The absolute, normalized destination path.

    Example:

    >>> check_destination("/tmp/new_model.tflite")
    '/tmp/new_model.tflite'
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(
            f"`path` must be a non-empty str or os.PathLike, got {path!r}."
        )
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"The parent directory of `path` does not exist: {parent!r} "
            f"(path={path!r})."
        )
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"Refusing to overwrite existing path {path!r}; {OVERWRITE_HINT}."
        )
    return path


def _fsync_path(path):
    """fsyncs a file, or every file and directory under a directory."""
    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            for name in files:
                _fsync_file(os.path.join(root, name))
            _fsync_dir(root)
    else:
        _fsync_file(path)


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Directories cannot be opened on some platforms.
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.remove(path)


def _commit(tmp, path, overwrite):
    """Moves the finished temporary `tmp` to `path`."""
    parent = os.path.dirname(path)
    if not os.path.lexists(path):
        if os.path.isdir(tmp):
            # Renaming a directory onto an existing non-empty directory fails,
            # so a concurrent writer cannot be silently clobbered.
            os.rename(tmp, path)
        else:
            # link() fails if `path` appeared in the meantime: an atomic
            # "create if absent". Fall back to rename where links are
            # unsupported.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(
                    f"Refusing to overwrite existing path {path!r} (it "
                    f"appeared while writing); {OVERWRITE_HINT}."
                ) from None
            except OSError:
                if os.path.lexists(path) and not overwrite:
                    raise FileExistsError(
                        f"Refusing to overwrite existing path {path!r}; {OVERWRITE_HINT}."
                    ) from None
                os.replace(tmp, path)
            else:
                os.remove(tmp)
        _fsync_dir(parent)
        return
    if not overwrite:
        raise FileExistsError(
            f"Refusing to overwrite existing path {path!r}; {OVERWRITE_HINT}."
        )
    same_kind = os.path.isdir(tmp) == (
        os.path.isdir(path) and not os.path.islink(path)
    )
    if same_kind and not os.path.isdir(tmp):
        # A file replacing a file: one atomic rename.
        os.replace(tmp, path)
        _fsync_dir(parent)
        return
    # A directory cannot be renamed over a non-empty directory or a file (and
    # vice versa): move the old one aside, move the new one in, then delete
    # the old one. On failure the old one is restored.
    backup_dir = tempfile.mkdtemp(
        prefix=f".{os.path.basename(path)}.old-", dir=parent
    )
    backup = os.path.join(backup_dir, "old")
    try:
        os.rename(path, backup)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(backup, path)
            raise
        _fsync_dir(parent)
    finally:
        _remove(backup_dir)


@contextlib.contextmanager
def atomic_path(path, overwrite=False, directory=False):
    """Context manager that yields a temporary path to write `path` through.

    Write the artifact to the yielded temporary path (a sibling of `path` in
    the same directory, so the final rename is atomic). When the block exits
    normally the content is fsynced and moved to `path`. When the block
    raises, the temporary content is deleted and `path` is left untouched.

    Args:
        path: Destination file or directory.
        overwrite: Whether an existing `path` may be replaced. If False and
            `path` exists, `FileExistsError` is raised before the block runs.
        directory: If True the yielded path is an existing empty directory
            (for SavedModels, checkpoints); otherwise it is a file path that
            does not exist yet.

    Yields:
        The temporary path to write to.

    Example:

    >>> with atomic_path("/tmp/model.bin", overwrite=True) as tmp:
    ...     with open(tmp, "wb") as f:
    ...         _ = f.write(b"weights")
    """
    path = check_destination(path, overwrite=overwrite)
    parent, name = os.path.split(path)
    if directory:
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=parent)
        os.close(fd)
        os.remove(tmp)
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(
                f"Nothing was written to the temporary path {tmp!r} for "
                f"{path!r}."
            )
        _fsync_path(tmp)
        _commit(tmp, path, overwrite)
    finally:
        _remove(tmp)


def atomic_write_bytes(path, data, overwrite=False):
    """Atomically writes `data` to the file `path`.

    Args:
        path: Destination file.
        data: The bytes to write.
        overwrite: Whether an existing file may be replaced.

    Returns:
        The absolute destination path.

    Example:

    >>> atomic_write_bytes("/tmp/hello.bin", b"hello", overwrite=True)
    '/tmp/hello.bin'
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"`data` must be bytes, got {type(data).__name__}."
        )
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return os.path.abspath(os.fspath(path))
