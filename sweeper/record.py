"""The typed record of `results/<study>/study.json`: what the store keeps of a study as last run, enough
for `status`, `best`, `verify` and `report` without the YAML.

Read once (`StudyRecord.of`), with every default in one place. Reading is lenient (keys written by a later
version are kept, missing ones take their defaults) so old stores stay readable; the file's keys are a
contract: add, never rename or drop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from sweeper.objective import Objective

if TYPE_CHECKING:
    from sweeper.study import Study

NOISE_Z = 2.0  # the default of search.noise_z


class RecordedSearch(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    method: str = "grid"
    noise_z: float = NOISE_Z


class RecordedWandb(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    project: str = "sweeper"
    entity: str | None = None
    mode: str = "offline"


class StudyRecord(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = ""
    description: str = ""
    source: str = ""
    scale_keys: list[str] = Field(default_factory=list)
    swept_keys: list[str] = Field(default_factory=list)
    variants: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    search: RecordedSearch = RecordedSearch()
    objective: Objective = Objective()
    planned: int | None = None
    fingerprints: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any] = Field(default_factory=dict)  # the whole study as validated, YAML keys

    @classmethod
    def of(cls, value: StudyRecord | dict[str, Any] | None) -> StudyRecord:
        """A record from a record, a parsed study.json, or nothing (all defaults)."""
        if isinstance(value, StudyRecord):
            return value
        return cls.model_validate(value or {})

    @classmethod
    def of_study(cls, study: Study, planned: int | None) -> StudyRecord:
        return cls(
            name=study.name,
            description=study.description,
            source=study.source,
            scale_keys=study.scale_keys(),
            swept_keys=study.swept_keys(),
            variants=list(study.variants),
            seeds=list(study.seeds),
            search=RecordedSearch.model_validate(study.search.model_dump()),
            objective=study.objective,
            planned=planned,
            fingerprints=study.variant_fingerprints(),
            spec=study.model_dump(mode="json"),
        )

    @property
    def wandb(self) -> RecordedWandb:
        return RecordedWandb.model_validate(self.spec.get("wandb") or {})

    @property
    def varied_keys(self) -> list[str]:
        return [*self.scale_keys, *self.swept_keys]

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
