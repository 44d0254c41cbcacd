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
        if not e["loc"] and e["type"] == "value_error":  # a check across keys: its message names them
            lines.append(f"  - {str(e['msg']).removeprefix('Value error, ')}")
            continue
        if e["type"] == "extra_forbidden":
            problem = "unknown key (typo?)"
        else:
            problem = e["msg"]
            if "input" in e and e["type"] != "missing":
                problem += f" (got {e['input']!r})"
        lines.append(f"  - {key}: {problem}")
    return "\n".join(lines)


#: Aliases (``*name``) one configuration file may use: enough for a shared block or two; a
#: "billion laughs" file needs dozens of nested ones.
MAX_YAML_ALIASES = 16


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (instead of "last one wins") and alias fan-out."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"more than {MAX_YAML_ALIASES} aliases (line {mark.line + 1}): refusing "
                    "alias expansion (write the values out)"
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: explicit keys override it
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.YAMLError(
                    f"duplicate key {key!r} (line {key_node.start_mark.line + 1}, first at line "
                    f"{seen[key] + 1}): remove one, only one value can apply"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path | str) -> Any:
    """A YAML file as plain data; duplicate keys and alias fan-out are errors naming the file."""
    path = Path(path)
    try:
        with path.open() as fh:
            return yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
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
