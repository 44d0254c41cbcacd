"""Fixtures of the I/O tests: archive zips laid out as data.binance.vision serves them."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest


def _write_archive_zip(root: Path, key: str, csv_text: str) -> bytes:
    """``root/binance/<key>`` (one CSV named like the zip) and its ``.CHECKSUM``; returns the zip bytes."""
    path = root / "binance" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.name.removesuffix(".zip") + ".csv", csv_text)
    data = buf.getvalue()
    path.write_bytes(data)
    path.with_name(path.name + ".CHECKSUM").write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}")
    return data


@pytest.fixture(scope="session")
def write_archive_zip() -> Callable[[Path, str, str], bytes]:
    """``write_archive_zip(root, key, csv_text)``: a verified archive zip under ``root/binance/``."""
    return _write_archive_zip
