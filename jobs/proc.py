"""Process helpers shared by the worker, the runner and job kinds that start programs (Linux).

Every process a job starts must end when the job ends or its worker dies, whatever it does:
- the runner is a child subreaper (`become_subreaper`): a job's process whose parent died is
  re-parented to the runner instead of to PID 1, so everything the job started stays below it;
- when the job ends, the runner kills every process below it (`kill_tree`), including those that
  left its process group with `setsid`;
- the runner asks for a signal when its worker dies (`die_with_parent`) and then does the same;
- every process of a job carries the job's run token in its environment (inherited), so the
  worker can still find and kill what a runner that died abruptly left behind (`processes_with`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LINUX = sys.platform.startswith("linux")


def _prctl(option: int, value: int) -> None:
    if LINUX:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(option, int(value), 0, 0, 0)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (no-op elsewhere).

    Called in a child: a killed worker then leaves no job (and no GPU memory) behind.
    """
    _prctl(PR_SET_PDEATHSIG, sig)


def leave_terminal() -> None:
    """Give up the controlling terminal, if this process has one, staying in its session.

    A runner shares its worker's session (so the kernel's autogroup weighs its threads' priorities
    against the job's; launch.py), which would also give it the worker's terminal: a job's program
    that asks for a password on /dev/tty would then be stopped (SIGTTIN: it is not in the
    foreground) until its timeout. Without a controlling terminal, opening /dev/tty fails at once,
    as it does for a job in a session of its own."""
    import fcntl
    import termios

    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:  # no controlling terminal: nothing to give up
        return
    try:
        fcntl.ioctl(fd, termios.TIOCNOTTY)
    except OSError:
        pass
    finally:
        os.close(fd)


def become_subreaper() -> None:
    """Orphaned descendants of this process are re-parented to it (not to PID 1)."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _parents() -> dict[int, int]:
    """{pid: parent pid} of every process we can see."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:  # it ended meanwhile
            continue
        # The name (field 2) may hold spaces and parentheses: the fields after its last ')' are fixed.
        fields = stat[stat.rfind(b")") + 2:].split()
        parents[int(entry)] = int(fields[1])
    return parents


def _children(pid: int) -> list[int] | None:
    """Direct children of `pid` from /proc/PID/task/*/children (None where the kernel has no such file)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(p) for p in fh.read().split())
        except FileNotFoundError:
            return None
        except OSError:
            continue
    return found


def children(pid: int) -> list[int]:
    """Direct children of `pid` (empty off Linux)."""
    if not LINUX:
        return []
    found = _children(pid)
    if found is None:
        found = [child for child, parent in _parents().items() if parent == pid]
    return found


def descendants(root: int) -> list[int]:
    """Every process below `root` (parents before their children), from /proc; empty off Linux.

    Reads each process's list of children where the kernel offers it (a few files, however many
    processes run), else scans every process's parent once."""
    if not LINUX:
        return []
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        children = _children(pid)
        if children is None:
            return _descendants_by_scan(root)
        found.extend(children)
        todo.extend(children)
    return found


def _descendants_by_scan(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def kill_tree(root: int, *, include_root: bool = False, sig: int = signal.SIGKILL) -> list[int]:
    """Send `sig` to every descendant of `root` (and to `root` itself when asked). Returns the pids."""
    targets = descendants(root) + ([root] if include_root else [])
    kill_all(targets, sig)
    return targets


def processes_with(variable: str, value: str) -> list[int]:
    """Pids of the processes (of this user) whose environment has `variable=value`."""
    if not LINUX:
        return []
    wanted = f"{variable}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if wanted in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # ended meanwhile, or another user's
            continue
    return found


def kill_all(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
