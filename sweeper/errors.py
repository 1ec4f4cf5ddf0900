"""The user-facing error of the `sweeper` package: one line, naming the file, field or value at fault.

The CLI prints it as `error: <message>` and exits with status 2 (`trainers.errors.ConfigError` is its base,
so trainer config errors read the same).
"""

from __future__ import annotations

from trainers.errors import ConfigError


class StudyError(ConfigError):
    """A user-facing study error: one line naming the file, the line, the field and what is allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


class StoreError(ConfigError):
    """A results store that cannot be read or written: one line naming the file and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))
