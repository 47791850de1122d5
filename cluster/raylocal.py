"""The embedded Ray: kept on loopback, and lean.

On these machines plain ``ray.init()`` advertises the machine's network address and listens on
every interface (``_node_ip_address="127.0.0.1"`` is ignored). Ray keeps to 127.0.0.1 when
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, but it reads that variable once, when
``ray._private.ray_constants`` is imported. So: set it in the environment (the raylet and the
workers inherit it) and, if Ray was already imported by then, also correct the constant Ray
consults when it picks the node address.

Token authentication: ``ray.init`` turns it on for a local cluster it starts, and when it finds a
cluster by itself (``address="auto"``) it turns it on if a token is saved (``~/.ray/auth_token``).
The head here is started without ``ray.init``, and ``eventray status`` attaches by the address
``stack.json`` names, so both do what ``ray.init`` would have done themselves.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eventray.cluster.services.procs import free_port
from eventray.cluster.services.reaper import Reaper, start_reaper

__all__ = [
    "LocalRay",
    "keep_ray_on_loopback",
    "keep_signal_handlers",
    "start_local_ray",
    "use_saved_ray_token",
]

_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_AUTH_MODE = "RAY_AUTH_MODE"


def keep_ray_on_loopback() -> None:
    """Call before ``ray.init`` starts a local cluster (idempotent)."""
    os.environ[_VARIABLE] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


def use_saved_ray_token() -> None:
    """Before ``ray.init(address=...)``: authenticate with the saved token if there is one,
    unless ``RAY_AUTH_MODE`` says otherwise (what ``ray.init`` does only for ``"auto"``)."""
    if os.environ.get(_AUTH_MODE) is not None:
        return
    try:
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]
    except ImportError:  # a Ray without token authentication
        return
    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        os.environ[_AUTH_MODE] = "token"
        Config.initialize("")  # Ray read its settings when it was imported


def _token_auth_for_new_cluster() -> None:
    """What ``ray.init`` does before it starts a local cluster: token authentication unless
    ``RAY_AUTH_MODE`` opts out, with a token generated and saved if none exists yet."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            enable_token_auth_by_default,
            ensure_token_if_auth_enabled,
        )
    except ImportError:  # a Ray without token authentication
        return
    enable_token_auth_by_default()
    ensure_token_if_auth_enabled(None, create_token_if_missing=True)
    _owner_only(Path.home() / ".ray" / "auth_token")  # Ray writes it 0644


def _owner_only(token: Path) -> None:
    """The token opens the cluster: readable by its owner alone (if it is ours to change)."""
    with contextlib.suppress(OSError):
        if token.exists() and token.stat().st_uid == os.getuid():
            token.parent.chmod(0o700)
            token.chmod(0o600)


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """``ray.init`` replaces the main thread's SIGTERM handler with one that exits at once;
    the process that runs the stack keeps its own (it stops the stack first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


# Every process the embedded stack starts must earn its place (~80-90 MB of RSS each on this
# machine): a local head needs no autoscaler monitor (there are no nodes to add) and no log
# monitor (workers' logs stay in files; the driver does not stream them), and actors start
# their own workers, so none are started ahead of time for tasks this stack never runs.
_LEAN_SYSTEM_CONFIG = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}


class LocalRay:
    """A local Ray head this process started; :meth:`stop` ends it and its processes."""

    def __init__(self, node: Any | None, reaper: Reaper | None) -> None:
        self._node = node
        self._reaper = reaper

    def stop(self) -> None:
        import ray

        ray.shutdown()
        if self._node is not None:
            self._node.kill_all_processes(check_alive=False, allow_graceful=True)
            self._node = None
        if self._reaper is not None:
            self._reaper.dismiss()
            self._reaper = None


def start_local_ray(
    *, namespace: str, num_cpus: int | None, include_dashboard: bool, dashboard_port: int = 0
) -> LocalRay:
    """Start a lean local head on 127.0.0.1 and connect this process to it.

    The head is started the way ``ray.init`` starts one (a ``ray._private.node.Node``, as
    ``ray.cluster_utils.Cluster`` does), with the two monitors turned off; if this Ray
    version's internals differ, it falls back to a plain ``ray.init``, which only costs the
    two extra processes. Ray ties the head's processes to this one; a reaper (see
    :mod:`~eventray.cluster.services.reaper`) ends the rest if this process is killed.

    The dashboard (``include_dashboard``) listens on 127.0.0.1:``dashboard_port`` (0: a free
    port). Ray's metrics export (the dashboard agent's Prometheus endpoint, ``MetricsExportPort``
    of ``ray.nodes()``) runs with or without it.
    """
    reaper = start_reaper()
    try:
        port = dashboard_port or free_port()
        return LocalRay(_start_head(namespace, num_cpus, include_dashboard, port), reaper)
    except BaseException:  # failed or interrupted half-way: end what the head started
        if reaper is not None:
            reaper.reap()
        raise


def _start_head(
    namespace: str, num_cpus: int | None, include_dashboard: bool, dashboard_port: int
) -> Any | None:
    """The head's node (None when started by the fallback ``ray.init``)."""
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
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port,
            "no_monitor": True,
            "include_log_monitor": False,
            # Not Ray's fixed 52365: two stacks (or a stack and `ray start`) on one machine
            # would fight over it, and jobs are submitted through it.
            "dashboard_agent_listen_port": free_port(),
            "_system_config": dict(_LEAN_SYSTEM_CONFIG),
        }
        params = RayParams(**options)
        _token_auth_for_new_cluster()
        node = Node(params, head=True, shutdown_at_exit=False, spawn_reaper=True)
    except (ImportError, TypeError, AttributeError):
        ray.init(
            address="local",
            namespace=namespace,
            num_cpus=num_cpus,
            include_dashboard=include_dashboard,
            dashboard_host="127.0.0.1",
            dashboard_port=dashboard_port,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
            _system_config=dict(_LEAN_SYSTEM_CONFIG),
            runtime_env=env,
        )
        return None
    try:
        ray.init(address=node.address, namespace=namespace, log_to_driver=False, runtime_env=env)
    except BaseException:
        node.kill_all_processes(check_alive=False, allow_graceful=False)
        raise
    return node
