"""The positions sources: a local file (relative to the config dir), a lake file, the user's HTTP
service (retries like the data sources, size limit); missing or oversized sources name themselves."""

from __future__ import annotations

import datetime as dt

import pytest
from upath import UPath

from midfreq_resources.clients.http_retry import NotFoundError, ResponseTooLargeError
from midfreq_resources.clients.positions import PositionsClient, PositionsSourceError

DAY = dt.date(2025, 6, 5)
BODY = b"pool,amount_usd,as_of\ncash,1,2025-06-05\n"


def test_local_and_lake_files(tmp_path):
    client = PositionsClient()
    (tmp_path / "configs" / "pos").mkdir(parents=True)
    (tmp_path / "configs" / "pos" / "2025-06-05.csv").write_bytes(BODY)
    data, where = client.read(
        "pos/2025-06-05.csv", DAY, UPath(tmp_path / "lake"), tmp_path / "configs", 1000, False
    )
    assert data == BODY and where == str(tmp_path / "configs" / "pos" / "2025-06-05.csv")
    (tmp_path / "lake" / "inbox").mkdir(parents=True)
    (tmp_path / "lake" / "inbox" / "p.csv").write_bytes(BODY)
    assert client.read("lake:inbox/p.csv", DAY, UPath(tmp_path / "lake"), tmp_path, 1000, False)[0] == BODY
    with pytest.raises(PositionsSourceError, match="no file at"):
        client.read("pos/2025-06-06.csv", DAY, UPath(tmp_path), tmp_path / "configs", 1000, False)
    with pytest.raises(PositionsSourceError, match="above the limit of 10"):
        client.read("pos/2025-06-05.csv", DAY, UPath(tmp_path), tmp_path / "configs", 10, False)


def test_http_service_with_retries_and_limits(execution_server, tmp_path):
    execution_server.seed_book("v", [{"pool": "cash", "amount_usd": 5.0}])
    client = PositionsClient(backoff_base_s=0.01, backoff_max_s=0.02)
    data, where = client.read(
        f"{execution_server.base_url}/positions/v",
        DAY,
        UPath(tmp_path),
        tmp_path,
        10_000,
        add_date_param=True,
    )
    assert b'"as_of": "2025-06-05T23:59:00Z"' in data and where.endswith("/positions/v")
    with pytest.raises(ResponseTooLargeError):
        client.read(f"{execution_server.base_url}/positions/v", DAY, UPath(tmp_path), tmp_path, 10, True)
    with pytest.raises(NotFoundError):
        client.read(f"{execution_server.base_url}/nothing", DAY, UPath(tmp_path), tmp_path, 10_000, True)
