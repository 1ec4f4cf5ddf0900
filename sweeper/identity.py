"""What names a trial and what names a variant's definition: content hashes of resolved trainer configs.

Only keys that differ from TrainConfig's defaults are hashed, so adding config keys with defaults later
keeps every stored id and fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from sweeper.user_config import UserConfig
from trainers.config import TrainConfig

# Keys that say how a trial runs, not which model it trains: they never split a definition.
EXECUTION_KEYS = frozenset({"seed", "threads"})


def _digest(values: dict[str, Any], length: int) -> str:
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def _identity(config: TrainConfig | UserConfig) -> dict[str, Any]:
    """The values that name a config: the built-in one's non-default keys; a user trainer's every value
    and the trainer itself."""
    if isinstance(config, UserConfig):
        return config.identity()
    return config.model_dump(mode="json", exclude_defaults=True)


def trial_id(config: TrainConfig | UserConfig) -> str:
    """16 hex chars identifying a resolved config, seed included: the store's primary key."""
    return _digest(_identity(config), 16)


def definition_fingerprint(
    config: TrainConfig | UserConfig | dict[str, Any], varied_keys: Iterable[str]
) -> str:
    """12 hex chars naming what a trial's variant *is*: its resolved config without the keys the study
    varies (scale and swept keys) and without execution keys (seed, threads).

    Every trial of one variant definition shares it; change `trainer.steps`, an inherited value or a
    variant's patch and the new trials get another one, so analyses never average the two. It is computed
    from a config alone, so rows stored before fingerprints existed get one on reading.
    """
    if isinstance(config, dict):
        config = TrainConfig.model_validate(config)
    varied = set(varied_keys)
    values = _identity(config)
    return _digest({k: v for k, v in values.items() if k not in EXECUTION_KEYS and k not in varied}, 12)
