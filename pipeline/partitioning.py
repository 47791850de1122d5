"""Partitioning by organization: a stable hash of ``orgId`` picks the partition.

One partition is owned by one lane and one rule partition, so events of one organization keep
their order and each rule-state key has a single writer. The hash must be stable across
processes and Python versions (``hash()`` is salted per process), hence a fixed digest.
Changing the partition count moves organizations between partitions: drain the stream first.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

__all__ = ["partition_of", "subject_for"]


@lru_cache(maxsize=65536)
def partition_of(org_id: str, partitions: int) -> int:
    """The partition (0-based) of an organization."""
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    return zlib.crc32(org_id.encode()) % partitions


def subject_for(prefix: str, partition: int) -> str:
    """The stream subject of a partition, e.g. ``eventray.in.p3``."""
    return f"{prefix}.p{partition}"
