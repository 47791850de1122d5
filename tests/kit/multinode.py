"""A multi-node Ray cluster on this machine: a head and worker nodes on loopback, each a raylet
of its own (``ray.cluster_utils.Cluster``), with this process as the driver, connected as
:func:`eventray.cluster.raylocal.start_local_ray` connects it. A :class:`~eventray.cluster.stack.
Stack` started afterwards uses this cluster (it attaches to an initialized Ray); its store
actor stays on the head, the driver's node.

Node loss is a worker's raylet and workers killed without grace (:meth:`MultiNodeRay.kill_node`);
the head checks its nodes' health every ``health_check_period_ms``, so the loss is seen in a
few seconds rather than Ray's default 30.
"""

from __future__ import annotations

from typing import Any

from eventray.actors.host import SETUP_HOOK
from eventray.cluster.raylocal import keep_ray_on_loopback

__all__ = ["MultiNodeRay"]

_HEAD_CONFIG = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 3,
    "enable_worker_prestart": False,
}


class MultiNodeRay:
    """``head_cpus`` on the head (with resource ``head``) and ``workers`` nodes of
    ``worker_cpus`` each (with resource ``worker``)."""

    def __init__(self, *, head_cpus: float = 1, workers: int = 2, worker_cpus: float = 2) -> None:
        self.head_cpus = head_cpus
        self.workers = workers
        self.worker_cpus = worker_cpus
        self.cluster: Any = None

    def __enter__(self) -> MultiNodeRay:
        import ray
        from ray.cluster_utils import Cluster

        keep_ray_on_loopback()
        common = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                **common,
                "num_cpus": self.head_cpus,
                "resources": {"head": 1},
                "_system_config": dict(_HEAD_CONFIG),
            },
        )
        try:
            for _ in range(self.workers):
                self.cluster.add_node(**common, num_cpus=self.worker_cpus, resources={"worker": 1})
            self.cluster.wait_for_nodes()
            ray.init(
                address=self.cluster.address,
                namespace="eventray",
                log_to_driver=False,
                runtime_env={
                    "env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                    "worker_process_setup_hook": SETUP_HOOK,
                },
            )
        except BaseException:
            self.cluster.shutdown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()

    @property
    def head_id(self) -> str:
        return str(self.cluster.head_node.node_id)

    def worker_ids(self) -> list[str]:
        """The worker nodes still in the cluster."""
        return sorted(str(node.node_id) for node in self.cluster.worker_nodes)

    def kill_node(self, node_id: str) -> None:
        """Kill worker node ``node_id``: its raylet and every worker process on it, at once."""
        node = next(n for n in self.cluster.worker_nodes if str(n.node_id) == node_id)
        self.cluster.remove_node(node, allow_graceful=False)
