"""Small, OS-level facts about processes: are they alive, are they still the same process.

A pid alone is not an identity: after a restart the server must not mistake an unrelated
process that reused a dead worker's pid for the worker. On Linux the kernel's start time of a
process (field 22 of /proc/PID/stat) tells them apart; elsewhere only the pid is checked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return text[text.rfind(")") + 2 :].split()


def start_token(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, as text; None when unknown."""
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    return fields[19] if fields is not None and len(fields) > 19 else None


def is_alive(pid: int | None, token: str | None = None) -> bool:
    """True when `pid` runs and, if `token` is known, is the process that had that token."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to someone else: not our worker
        return False
    fields = _stat_fields(pid)
    if fields is None:  # no /proc (not Linux): the pid answering is all we can know
        return token is None
    if fields[0] in ("Z", "X"):  # a zombie has finished; only its exit status remains
        return False
    return token is None or (len(fields) > 19 and fields[19] == token)


def send(pid: int | None, sig: int, token: str | None = None) -> bool:
    """Signal `pid` if it is still the process `token` names; False when it was not there."""
    if not is_alive(pid, token):
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        return True
    return False


def describe_exit(code: int) -> str:
    """'exited with code 3' or 'was killed by SIGKILL' from a Popen return code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a child started in its own session as Ctrl-C would, then kill it if it lingers.

    SIGINT goes to the whole process group (a server and whatever it started), so they shut
    down in their own order; SIGKILL only after `grace` seconds.
    """
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
