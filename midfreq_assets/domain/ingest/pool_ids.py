"""DefiLlama pool ids: the one validator the client, the recorder and the replay server share.

A pool id reaches URLs (``/chart/<id>``) and file names (``chart/<id>.json``), so nothing but a
UUID may pass. DefiLlama itself accepts any letter case (:func:`is_pool_uuid`); midfreq keys its
data on the canonical lower-case form (:func:`validate_pool_id`).
"""

from __future__ import annotations

import re

POOL_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class InvalidPoolIdError(ValueError):
    """A pool id that is not a UUID never reaches a URL or a file path."""


def is_pool_uuid(value: object) -> bool:
    """True for ids DefiLlama accepts on ``/chart/<id>`` (anything else answers 400)."""
    return isinstance(value, str) and POOL_UUID_RE.fullmatch(value) is not None


def validate_pool_id(pool_id: object) -> str:
    """``pool_id`` itself when it is a canonical (lower-case) UUID, else :class:`InvalidPoolIdError`."""
    if not is_pool_uuid(pool_id):
        raise InvalidPoolIdError(f"pool id {pool_id!r} is not a UUID")
    if pool_id != str(pool_id).lower():
        raise InvalidPoolIdError(f"pool id {pool_id!r} is not in canonical UUID form")
    return str(pool_id)
