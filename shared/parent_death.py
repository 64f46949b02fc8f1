"""A child process that dies with the process that started it: `Popen(with_parent_death(argv))`.

The launcher starts each service in a session of its own (services/launcher.py); killed
outright (SIGKILL, the OOM killer) it cannot stop them, and they would live on. On Linux the
kernel can: prctl(PR_SET_PDEATHSIG) has it send the child a signal when its parent dies. This
file, run as a small interpreter between fork and the command (`python -I -S this PID -- argv`),
asks for SIGTERM and execs the command: the request survives exec, and unlike a `preexec_fn`
nothing runs between fork and exec in a parent that has threads. Elsewhere the command runs as
it is.

The kernel sends the signal when the parent's *thread* that forked ends, not its process:
start such children from a thread that lives as long as the process (the main thread).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
"""linux/prctl.h"""
PARENT_DEATH_SIGNAL = signal.SIGTERM
"""What a child gets when its parent dies: SIGTERM, so that it stops as it would be stopped."""


def with_parent_death(argv: list[str]) -> list[str]:
    """`argv` run so that it gets `PARENT_DEATH_SIGNAL` when this process's calling thread ends
    (Linux); unchanged elsewhere. The command keeps its pid, environment and session."""
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-I", "-S", __file__, str(os.getpid()), "--", *argv]


def main(args: list[str]) -> int:
    parent, separator, *command = args
    if separator != "--" or not command:
        print("usage: parent_death.py PARENT_PID -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if os.getppid() != int(parent):  # the parent died before the request: no signal comes
        return 128 + int(PARENT_DEATH_SIGNAL)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
