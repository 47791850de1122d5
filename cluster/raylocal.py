"""Keeping a local Ray on loopback.

On these machines plain ``ray.init()`` advertises the machine's network address and listens on
every interface (``_node_ip_address="127.0.0.1"`` is ignored). Ray keeps to 127.0.0.1 when
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, but it reads that variable once, when
``ray._private.ray_constants`` is imported. So: set it in the environment (the raylet and the
workers inherit it) and, if Ray was already imported by then, also correct the constant Ray
consults when it picks the node address.
"""

from __future__ import annotations

import os
import sys

__all__ = ["keep_ray_on_loopback"]

_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_ray_on_loopback() -> None:
    """Call before ``ray.init`` starts a local cluster (idempotent)."""
    os.environ[_VARIABLE] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]
