"""A child started through `with_parent_death` runs its command unchanged (pid, session) and
gets SIGTERM when its parent dies, even killed outright (Linux)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared.parent_death import PARENT_DEATH_SIGNAL, with_parent_death
from tests.system.agents import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl: Linux")

PR_GET_PDEATHSIG = 2
READ_PDEATHSIG = f"""
import ctypes, os
value = ctypes.c_int()
ctypes.CDLL(None).prctl({PR_GET_PDEATHSIG}, ctypes.byref(value), 0, 0, 0)
print(value.value, os.getpid(), os.getsid(0))
"""


def test_the_command_runs_as_itself_with_the_parent_death_signal() -> None:
    proc = subprocess.Popen(
        with_parent_death([sys.executable, "-c", READ_PDEATHSIG]),
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=30)
    signum, pid, sid = (int(v) for v in out.split())
    assert signum == PARENT_DEATH_SIGNAL
    assert pid == proc.pid  # exec'd in place: the pid the parent knows and signals
    assert sid == proc.pid  # still in a session of its own
    assert proc.returncode == 0


def test_a_child_dies_with_its_parent_killed_outright(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", (
            "import subprocess, sys, time\n"
            "from shared.parent_death import with_parent_death\n"
            "child = subprocess.Popen(with_parent_death(['sleep', '60']))\n"
            f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "time.sleep(60)\n"
        )],
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    child = 0
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 30)
        child = int(pid_file.read_text())
        assert wait_until(lambda: _command(child) == "sleep", 30)  # past the wrapper's exec
        parent.kill()
        parent.wait()
        assert wait_until(lambda: not _alive(child), 10), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if child:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its new parent, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
