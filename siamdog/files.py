"""Writing files so that a crash, a kill or a full disk never leaves one half-written."""

import json
import os

TEMP_PREFIX = ".tmp-"  # a file being written is `.tmp-<process id>-<name>` beside `<name>`


def replace_atomically(path: str | os.PathLike, write) -> None:
    """Call `write(tmp)` on a temporary name beside `path`, then rename it over `path`.

    The temporary keeps the file's suffix (Keras insists on `.keras` and `.weights.h5`), and
    names the process: processes that write the same file at once (runs sharing a data
    folder's feature cache) each rename a whole file of their own.
    A failure while writing leaves the previous file as it was, and no temporary behind
    when the failure is an exception.
    """
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path) or ".", f"{TEMP_PREFIX}{os.getpid()}-{os.path.basename(path)}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically, flushed to disk before the rename."""

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    replace_atomically(path, write)


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in `path`, or None if it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: str | os.PathLike, value) -> None:
    write_bytes(path, json.dumps(value, indent=1).encode())
