"""The embedded Ray: kept on loopback, and lean.

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
from typing import Any

__all__ = ["LocalRay", "keep_ray_on_loopback", "start_local_ray"]

_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_ray_on_loopback() -> None:
    """Call before ``ray.init`` starts a local cluster (idempotent)."""
    os.environ[_VARIABLE] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


# Every process the embedded stack starts must earn its place (~80-90 MB of RSS each on this
# machine): a local head needs no autoscaler monitor (there are no nodes to add) and no log
# monitor (workers' logs stay in files; the driver does not stream them), and actors start
# their own workers, so none are started ahead of time for tasks this stack never runs.
_LEAN_SYSTEM_CONFIG = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}


class LocalRay:
    """A local Ray head this process started; :meth:`stop` ends it and its processes."""

    def __init__(self, node: Any | None) -> None:
        self._node = node

    def stop(self) -> None:
        import ray

        ray.shutdown()
        if self._node is not None:
            self._node.kill_all_processes(check_alive=False, allow_graceful=True)
            self._node = None


def start_local_ray(*, namespace: str, num_cpus: int | None, include_dashboard: bool) -> LocalRay:
    """Start a lean local head on 127.0.0.1 and connect this process to it.

    The head is started the way ``ray.init`` starts one (a ``ray._private.node.Node``, as
    ``ray.cluster_utils.Cluster`` does), with the two monitors turned off; if this Ray
    version's internals differ, it falls back to a plain ``ray.init``, which only costs the
    two extra processes.
    """
    import ray

    from eventray.actors.host import SETUP_HOOK

    keep_ray_on_loopback()
    env = {"env_vars": {_VARIABLE: "0"}, "worker_process_setup_hook": SETUP_HOOK}
    try:
        from ray._private.node import Node
        from ray._private.parameter import RayParams

        options: dict[str, Any] = {  # (Ray annotates include_log_monitor as str; it is a flag)
            "node_ip_address": "127.0.0.1",
            "num_cpus": num_cpus,
            "include_dashboard": include_dashboard,
            "no_monitor": True,
            "include_log_monitor": False,
            "_system_config": dict(_LEAN_SYSTEM_CONFIG),
        }
        params = RayParams(**options)
        node = Node(params, head=True, shutdown_at_exit=False, spawn_reaper=True)
    except (ImportError, TypeError, AttributeError):
        ray.init(
            address="local",
            namespace=namespace,
            num_cpus=num_cpus,
            include_dashboard=include_dashboard,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
            _system_config=dict(_LEAN_SYSTEM_CONFIG),
            runtime_env=env,
        )
        return LocalRay(None)
    try:
        ray.init(address=node.address, namespace=namespace, log_to_driver=False, runtime_env=env)
    except BaseException:
        node.kill_all_processes(check_alive=False, allow_graceful=False)
        raise
    return LocalRay(node)
