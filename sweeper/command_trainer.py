"""The command-line form of a user's trainer: `trainer_command: python train.py --lr {lr} --width {width}`.

The template is split like a shell line (no shell runs it); `{key}` in an argument becomes that config
value, `{config_json}` the whole config as JSON (also in the environment as SWEEPER_CONFIG). It runs in the
directory sweeper runs in. On stdout, each line that is a JSON object is a message: one with `status` ends
the trial (`completed`, `diverged` or `failed`, plus summary metrics); any other is a reported point (with
`step` and metrics). Other lines are the script's own logging and are left alone. Exit 0 without a status
line is `completed`; a non-zero exit, or a line that starts with `{` but is not a JSON object, is a failed
trial with the message.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from sweeper.user_trainer import BadReport

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
WHOLE_CONFIG = "config_json"
STDERR_LINES = 20  # lines of the script's stderr kept for the failure message


def split_template(template: str) -> list[str]:
    """The template's arguments, or ValueError saying why it cannot be split (an open quote)."""
    parts = shlex.split(template)
    if not parts:
        raise ValueError("the command is empty")
    return parts


def placeholders(template: str) -> list[str]:
    """The `{key}` names the template uses, in order, each once."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def command_line(template: str, config: dict[str, Any]) -> list[str]:
    """The argv for one trial: each `{key}` replaced by the config value (`{{` and `}}` stay braces)."""

    def value(match: re.Match) -> str:
        key = match.group(1)
        if key == WHOLE_CONFIG:
            return json.dumps(config, sort_keys=True)
        item = config[key]
        return json.dumps(item) if isinstance(item, list | dict | bool) or item is None else str(item)

    return [
        PLACEHOLDER.sub(value, part).replace("{{", "{").replace("}}", "}")
        for part in split_template(template)
    ]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the Ray worker that started it dies (Linux), so that a killed or
    stopped trial leaves no training script behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class CommandTrainer:
    """`train(config, report)` that runs the command and reads its JSON lines."""

    def __init__(self, template: str, cwd: str) -> None:
        self.template, self.cwd = template, cwd

    def __call__(self, config: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        argv = command_line(self.template, config)
        # PYTHONUNBUFFERED: a Python script's points arrive as it prints them, not when its pipe buffer
        # fills (ASHA judges a trial by the points it has seen).
        env = {**os.environ, "SWEEPER_CONFIG": json.dumps(config, sort_keys=True), "PYTHONUNBUFFERED": "1"}
        try:
            child = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                preexec_fn=_die_with_parent if os.name == "posix" else None,
            )
        except OSError as err:
            raise BadReport(f"cannot start {argv[0]!r}: {err.strerror or err}") from None
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        reader = threading.Thread(target=lambda: tail.extend(child.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        final: dict[str, Any] | None = None
        try:
            assert child.stdout is not None
            for number, line in enumerate(child.stdout, 1):
                message = _message(line, number)
                if message is None:
                    continue
                if "status" in message:
                    final = message
                else:
                    report(message)
            code = child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        reader.join(timeout=5)
        if code != 0:
            last = next((x.strip() for x in reversed(tail) if x.strip()), "")
            why = f"signal {-code}" if code < 0 else f"status {code}"
            raise BadReport(f"the command exited with {why}" + (f": {last[:300]}" if last else ""))
        return final if final is not None else {"status": "completed"}


def _message(line: str, number: int) -> dict[str, Any] | None:
    """The JSON object on one stdout line; None for a line that is not one (the script's logging)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadReport(f"stdout line {number} is not valid JSON ({err.msg}): {text[:120]}") from None
    if not isinstance(value, dict):
        raise BadReport(f"stdout line {number} is not a JSON object: {text[:120]}")
    return value
