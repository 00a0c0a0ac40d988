"""On-disk cache of parsed CSV files: every job of a campaign reads the same train file.

Reading and normalising the 12,000 sample reviews takes about 0.1 s, paid by every fine-tune at its
start, and the runner's preflight read the file once more just before. An entry loads in a few ms.

An entry is keyed by the file's identity (real path, device, inode, size, modification time in ns)
and by what was asked of it (which reader, its columns, the label count) and FORMAT: a file that is
rewritten gets a new key and is read again; an entry exists only for a file its reader accepted.
A file modified in the last RACY_S seconds is neither cached nor looked up: the kernel stamps
modification times with a coarse clock, so a file rewritten twice within one tick at the same size
would keep its identity (git's "racy clean" problem, solved the same way).
Entries are ``.npz`` files (the texts as one UTF-8 byte array plus offsets, labels as int64), written
atomically under ``csv/`` in the tokenization cache's folder ($SCHED_CACHE_DIR, else
~/.cache/sched/tokens); never unpickled.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Sequence

import numpy as np

from .util import atomic_output

FORMAT = "1"  # bump when what a reader returns changes (parsing, normalising)
SUBFOLDER = "csv"
RACY_S = 2.0


def folder() -> str:
    from .cache import CACHE_ENV, DEFAULT_CACHE_DIR

    return os.path.join(os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR), SUBFOLDER)


def entry_for(path: str | os.PathLike, *asked: object) -> str | None:
    """The entry of this file read this way; None when it is not a regular file (missing, a folder,
    a FIFO: the reader itself says what is wrong) or was modified in the last RACY_S seconds."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or time.time() - st.st_mtime < RACY_S:
        return None
    identity = [FORMAT, os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, *asked]
    key = hashlib.sha256("\0".join(map(str, identity)).encode()).hexdigest()[:32]
    return os.path.join(folder(), f"{key}.npz")


def rows(entry: str | None) -> int | None:
    """How many rows the entry holds (the reader accepted the file), or None without one."""
    if entry is None or not os.path.exists(entry):
        return None
    try:
        with np.load(entry, allow_pickle=False) as z:
            return int(len(z["offsets"]) - 1)
    except (OSError, ValueError, KeyError):
        return None


def load(entry: str | None) -> tuple[list[str], np.ndarray | None] | None:
    """(texts, labels or None) from an entry, or None when there is none (or it is unreadable)."""
    if entry is None or not os.path.exists(entry):
        return None
    try:
        with np.load(entry, allow_pickle=False) as z:
            blob, offsets = z["texts"].tobytes(), z["offsets"]
            labels = z["labels"] if "labels" in z.files else None
    except (OSError, ValueError, KeyError):
        return None
    bounds = offsets.tolist()
    texts = [blob[bounds[i]:bounds[i + 1]].decode("utf-8") for i in range(len(bounds) - 1)]
    return texts, labels


def save(entry: str | None, texts: Sequence[str], labels: Sequence[int] | None = None) -> None:
    """Write an entry; a cache that cannot be written (read-only, full) is skipped."""
    if entry is None:
        return
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in encoded], dtype=np.int64)]).astype(np.int64)
    arrays = {"texts": np.frombuffer(b"".join(encoded), dtype=np.uint8), "offsets": offsets}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    try:
        with atomic_output(entry) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError:
        pass
