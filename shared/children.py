"""How asyncio learns that a child process has exited.

Python 3.11's default (``ThreadedChildWatcher``) starts a thread per child process
that blocks in ``waitpid``: the server starts several children a run (git, tar, a
shell step), and each thread's start and its hand-back to the loop cost more than
the child's own start. A pidfd (Linux 5.3 and later) is a file descriptor the loop
polls like a socket: no thread. Python 3.12 picks it by itself; 3.11 must be told.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import warnings

__all__ = ["watch_children_with_pidfds"]


def watch_children_with_pidfds() -> bool:
    """Make asyncio watch child processes through pidfds where it would not by itself
    (Python < 3.12) and the kernel has them; whether it now does. Call before the loop
    starts (``asyncio.run``): the watcher is process-wide."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # an older kernel, or a sandbox that refuses the call
        return False
    with warnings.catch_warnings(), contextlib.suppress(AttributeError):
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
        return True
    return False
