"""Settings parsed once from the environment (docs/style.md: logic never reads os.environ).

Handlers and the CLI call `Settings.from_env()` and pass the result down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rxguard.kb import Phase


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    phase: Phase = Phase.FULL  # RXGUARD_PHASE: pilot | province | full
    rules_dir: Path | None = None  # RXGUARD_RULES_DIR, default: rules/ beside the package
    chunk_size: int = Field(default=5000, ge=1)  # RXGUARD_CHUNK_SIZE: lines per chunk file
    default_admdvs: str | None = None  # RXGUARD_DEFAULT_ADMDVS: region of lines without admdvs

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        names = {"phase": "RXGUARD_PHASE", "rules_dir": "RXGUARD_RULES_DIR", "chunk_size": "RXGUARD_CHUNK_SIZE"}
        return cls.model_validate(set_variables(env, {**names, "default_admdvs": "RXGUARD_DEFAULT_ADMDVS"}))


def set_variables(env: Mapping[str, str] | None, names: Mapping[str, str]) -> dict[str, object]:
    """field -> value of its environment variable (`names`: field -> variable), for the
    variables that are set and not empty (`env` defaults to os.environ)."""
    env = os.environ if env is None else env
    return {field: env[var] for field, var in names.items() if env.get(var)}
