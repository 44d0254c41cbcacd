"""The math never imports Dagster: features, models, optimizer and backtest stay plain Python."""

from __future__ import annotations

import ast
from pathlib import Path

DOMAIN = Path(__file__).parents[2] / "midfreq_assets" / "domain"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_domain_modules_do_not_import_dagster():
    files = sorted(DOMAIN.rglob("*.py"))  # every stage folder, not only the top level
    assert len(files) >= 5
    offenders = [
        str(f.relative_to(DOMAIN)) for f in files if {"dagster", "midfreq_resources"} & imported_modules(f)
    ]
    assert offenders == []
