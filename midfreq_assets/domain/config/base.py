"""The machinery every configuration section shares: strict models, YAML loading, clear errors.

Kept apart from ``config.py`` so that each domain module can define its own config section on
``StrictModel`` and ``config.py`` can assemble them into ``VaultConfig`` without import cycles.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message names file, key and problem."""


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors (catches typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def normalize_slug(name: str) -> str:
    """DefiLlama project slug: lower-case, spaces -> '-'."""
    return re.sub(r"\s+", "-", name.strip().lower())


M = TypeVar("M", bound=BaseModel)


def format_validation_error(path: Path | str, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration ({err.error_count()} problem(s))"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<top level>"
        if e["type"] == "extra_forbidden":
            problem = "unknown key (typo?)"
        else:
            problem = e["msg"]
            if "input" in e and e["type"] != "missing":
                problem += f" (got {e['input']!r})"
        lines.append(f"  - {key}: {problem}")
    return "\n".join(lines)


def read_yaml(path: Path | str) -> Any:
    path = Path(path)
    try:
        with path.open() as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def validate_model(model: type[M], data: Any, source: Path | str) -> M:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def load_model(model: type[M], path: Path | str) -> M:
    return validate_model(model, read_yaml(path), path)


def config_dir() -> Path:
    return Path(os.environ.get("MIDFREQ_CONFIG_DIR", DEFAULT_CONFIG_DIR))
