"""Ray processes and folders a driver leaves behind, and the watchdog that removes them.

A driver killed with SIGKILL cannot clean up; Ray's agents then outlive it for minutes. So each driver
starts this module as a small detached process (`python -m sweeper.reaper PID FOLDER`) that waits for the
driver to exit, then kills every process whose command line names the driver's Ray folder and deletes the
folder. No Ray import here: the watchdog stays small.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 1.0


def kill_leftover_ray(temp_dir: Path) -> int:
    """SIGKILL the processes (other than this one) whose command line names `temp_dir`; how many."""
    marker = str(temp_dir)
    killed = 0
    proc = Path("/proc")
    if not proc.exists():
        return int(subprocess.run(["pkill", "-9", "-f", marker], check=False).returncode == 0)
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"{marker}/" in cmdline or cmdline.rstrip().endswith(marker) or f"{marker} " in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def remove_leftovers(temp_dir: Path) -> None:
    kill_leftover_ray(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def start_watchdog(driver_pid: int, temp_dir: Path) -> subprocess.Popen:
    """The detached watchdog of one driver (its own session: a signal to the driver's group spares it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "sweeper.reaper", str(driver_pid), str(temp_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def main(argv: list[str]) -> None:
    pid, temp_dir = int(argv[0]), Path(argv[1])
    while alive(pid):
        time.sleep(POLL_S)
    remove_leftovers(temp_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
