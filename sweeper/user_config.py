"""The resolved config of one trial of a user's own trainer (`trainer_entry` or `trainer_command`): a value
type, beside the built-in `TrainConfig`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, eq=False)
class UserConfig:
    """The resolved config of one trial of a user's trainer: plain values, and which trainer takes them.

    Shaped like `TrainConfig` where the orchestration touches it (`model_dump`, hashable), so plans,
    ids and fingerprints treat both alike."""

    values: dict[str, Any]
    trainer: str  # the entry (module:function) or the command template: part of what a trial *is*

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return json.loads(json.dumps(self.values))

    def identity(self) -> dict[str, Any]:
        """What names the trial: every value and the trainer ('@' keeps it apart from any config key)."""
        return {**self.model_dump(), "@trainer": self.trainer}

    def _key(self) -> str:
        return json.dumps(self.identity(), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserConfig) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)
