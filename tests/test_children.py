"""shared.children: child processes are waited for through pidfds, without a thread each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# In a process of its own: the child watcher is process-wide.
SCRIPT = """
import asyncio, json, signal, sys, threading
from shared.children import watch_children_with_pidfds

async def main():
    async def exit_code(*argv):
        proc = await asyncio.create_subprocess_exec(*argv)
        threads.append(threading.active_count())
        if argv[0] == "sleep":
            proc.send_signal(signal.SIGKILL)
        return await proc.wait()
    codes = await asyncio.gather(*(exit_code(*argv) for argv in
                                   [["true"], ["sh", "-c", "exit 3"], ["sleep", "30"]] * 4))
    print(json.dumps({"watch": watch, "codes": sorted(set(codes)), "threads": max(threads)}))

threads = []
watch = watch_children_with_pidfds() if sys.argv[1] == "pidfds" else None
asyncio.run(main())
"""


def children(watcher: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", SCRIPT, watcher],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_children_are_reaped_with_their_exit_codes_and_no_thread_each() -> None:
    default, pidfds = children("default"), children("pidfds")

    # Linux >= 5.3 and Python 3.11 here (3.12 would watch through pidfds by itself)
    assert pidfds["watch"] is True
    assert default["codes"] == pidfds["codes"] == [-9, 0, 3]
    assert default["threads"] > 1  # what it saves: a thread a child
    assert pidfds["threads"] == 1  # twelve children at once, only the loop's own thread
