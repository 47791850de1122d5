"""The running stack: embedded services, Ray, and the actor topology, started and stopped as one.

``eventray up`` and ``eventray demo`` use :class:`Stack`; the tests use it too. Embedded
services are started only for ports whose settings name no real server. Everything listens on
127.0.0.1; Ray is kept on loopback with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (DESIGN.md).
The endpoints of a running stack are written to ``<data_dir>/stack.json`` so ``eventray apply``,
``status`` and ``events query`` can find it (with the admin's credentials: the file is the
owner's alone). Each actor is handed its own role's credentials (:mod:`eventray.cluster.roles`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventray.cluster.admin_token import ensure_admin_token
from eventray.cluster.embedded import check_embedded
from eventray.cluster.raylocal import (
    LocalRay,
    keep_ray_on_loopback,
    keep_signal_handlers,
    start_local_ray,
    use_saved_ray_token,
)
from eventray.cluster.roles import VALKEY_USERS, Role, nats_roles, role_endpoints
from eventray.cluster.status_gather import gather_status, lane_triggers
from eventray.cluster.wiring import Endpoints, Wiring
from eventray.config.settings import Settings
from eventray.pipeline.balance import Move, RateMeter, plan_join, plan_leave, plan_move
from eventray.pipeline.catalog import build_catalog
from eventray.pipeline.errors import ConfigError, ConfigIssue, InvalidInput, Unavailable
from eventray.pipeline.lane import Abandoned
from eventray.pipeline.loader import entity_from_dict
from eventray.pipeline.scaling import Decision, ScalingPolicy, Utilisation

if TYPE_CHECKING:
    from eventray.cluster.services.nats_server import RunningNats

__all__ = [
    "LanePlacementError",
    "PortTakenError",
    "Stack",
    "StackInfo",
    "StopReport",
    "apply_documents",
    "check_merged",
    "lane_triggers",
    "read_stack_info",
]

_ANSWER_GRACE_S = 3.0  # a lane's drain answers within its deadline plus this, or is cut off
_SERVICE_STOP_S = 10.0  # the ingress's and the store's own stops (the store flushes its log)
INGRESS_PORT_VARIABLE = "EVENTRAY_INGRESS__PORT"
METRICS_PORT_VARIABLE = "EVENTRAY_METRICS__PORT"
MQTT_PORT_VARIABLE = "EVENTRAY_MQTT__PORT"
API_PORT_VARIABLE = "EVENTRAY_API__PORT"

_log = logging.getLogger(__name__)


class LanePlacementError(Unavailable):
    """Lanes (or pool actors) Ray could not place on any node (or that did not start) in
    time."""

    def __init__(
        self, names: list[str], cpus: float, timeout_s: float, *, setting: str = "lane_cpus",
        fewer: str = "EVENTRAY_PIPELINE__LANES_MAX",
    ) -> None:  # fmt: skip
        super().__init__(
            f"{', '.join(names)} not started within {timeout_s:g} s: no node had "
            f"ray.{setting}={cpus:g} CPU free ({_free_cpus()}); add a node (or, on a local "
            f"head, raise EVENTRAY_RAY__NUM_CPUS), lower EVENTRAY_RAY__{setting.upper()} or "
            f"{fewer}, or raise EVENTRAY_RAY__PLACEMENT_TIMEOUT_S"
        )
        self.names = names


def _free_cpus() -> str:
    import ray

    try:
        free = [
            f"{n['NodeManagerAddress']}:{n['NodeManagerPort']} {n['Resources'].get('CPU', 0):g} CPU"
            for n in ray.nodes()  # type: ignore[no-untyped-call]
            if n.get("Alive")
        ]
        available = ray.available_resources()  # type: ignore[no-untyped-call]
        return f"free {available.get('CPU', 0):g} CPU; nodes: " + "; ".join(free)
    except Exception:  # a message, never a second failure
        return "cluster resources unknown"


class PortTakenError(Unavailable):
    """A port the stack must listen on is in use by another process."""

    def __init__(self, port: int, variable: str) -> None:
        super().__init__(
            f"port {port} is taken: set {variable} to another port (0 picks a free one)"
        )
        self.port = port
        self.variable = variable


@dataclass
class StackInfo:
    """What ``stack.json`` records about a running stack."""

    endpoints: dict[str, Any]
    ingress_url: str
    ray_address: str
    pid: int
    metrics_url: str = ""
    mqtt_url: str = ""
    api_url: str = ""
    """The management API (``/api/v1/manage``); "" when disabled."""
    namespace: str = "eventray"
    """The Ray namespace of the stack's actors (``ray.namespace``): what a command attaching
    to the stack must join to find them by name. The default is what a ``stack.json`` written
    before the setting existed meant."""

    def endpoints_obj(self) -> Endpoints:
        e = dict(self.endpoints)
        for key in ("chdb_path", "config_dir", "blob_dir"):
            if e.get(key):
                e[key] = Path(e[key])
        return Endpoints(**e)


@dataclass
class StopReport:
    """What a stop left undone: all of it unacknowledged, so delivered again at the next start.

    Attributes:
        abandoned: per lane actor name, the batches its drain abandoned.
        unanswered: lanes whose drain did not report, and why (killed with what they held).
        unacknowledged: per partition, (events, first, last stream sequence) its consumer had
            delivered but not acknowledged when the lanes were gone: the abandoned batches and
            what lanes had fetched ahead. Empty if the stream could not be read.
        seconds: how long the stop took.
    """

    abandoned: dict[str, list[Abandoned]] = field(default_factory=dict)
    unanswered: dict[str, str] = field(default_factory=dict)
    unacknowledged: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """One line per abandoned batch, then a summary (what ``eventray up`` prints)."""
        out = []
        for name, held in sorted(self.abandoned.items()):
            lane = name.removeprefix("lane-")
            for b in held:
                out.append(
                    f"lane {lane} partition p{b.partition}: abandoned {b.events} events "
                    f"(stream seq {b.first_seq}-{b.last_seq}, in its {b.stage}), they will be "
                    "redelivered at next start"
                )
        for name, why in sorted(self.unanswered.items()):
            out.append(
                f"{name.replace('-', ' ')} {why} and was killed; what it held will be "
                "redelivered at next start"
            )
        batches = sum(len(b) for b in self.abandoned.values())
        events = sum(b.events for bs in self.abandoned.values() for b in bs)
        summary = f"stopped in {self.seconds:.1f} s"
        if batches:
            summary += f": {batches} batch(es) of {events} events abandoned"
        pending = sum(count for count, _, _ in self.unacknowledged.values())
        if pending:
            where = "; ".join(
                f"p{p}: {n} between seq {first} and {last}"
                for p, (n, first, last) in sorted(self.unacknowledged.items())
            )
            summary += (
                f"; {pending} events were not acknowledged and will be redelivered at next "
                f"start ({where})"
            )
        elif not batches and not self.unanswered:
            summary += ", nothing abandoned"
        return [*out, summary]


def read_stack_info(data_dir: Path) -> StackInfo | None:
    """The stack ``eventray up`` runs on ``data_dir``; None when there is none, including when
    the ``up`` that wrote the file is gone (killed with -9, it could not remove it)."""
    path = data_dir / "stack.json"
    if not path.exists():
        return None
    info = StackInfo(**json.loads(path.read_text()))
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return info


@dataclass
class Stack:
    """Start with :meth:`start`, stop with :meth:`stop` (drains in-flight batches first)."""

    settings: Settings
    services: list[Any] = field(default_factory=list)
    endpoints: Endpoints | None = None
    roles: dict[Role, Endpoints] = field(default_factory=dict)
    actors: dict[str, Any] = field(default_factory=dict)
    ingress_port: int = 0
    metrics_port: int = 0
    api_port: int = 0
    _local_ray: LocalRay | None = None
    _metrics_server: Any = None
    _devices: Any = None
    assignment: dict[str, list[int]] = field(default_factory=dict)
    """Partitions per lane actor, as the driver last assigned them."""
    moves: list[Move] = field(default_factory=list)
    _rates: RateMeter = field(default_factory=RateMeter)
    _balanced_at: float = 0.0
    rule_layout: tuple[int, int] | None = None
    """The rule actors' (generation, count); None when the lanes evaluate rules."""
    _script_index: int = 0
    _scaler: ScalingPolicy | None = None
    _utilisation: Utilisation | None = None
    decisions: list[Decision] = field(default_factory=list)
    """The scaling decisions that changed the lane count (or tried to), oldest first."""

    # ------------------------------------------------------------------ services
    def _start_services(self) -> Endpoints:
        s = self.settings
        data = s.data_dir.resolve()
        data.mkdir(parents=True, exist_ok=True)
        # Events, rule state, the config and stack.json (the Ray token's address) live here:
        # only the owner may enter, whatever the files' own modes (chDB writes 0644).
        data.chmod(0o700)
        ensure_admin_token(data)
        nats, redis = None, None
        nats_url = s.nats.url
        if nats_url is None:
            from eventray.cluster.services.nats_server import MqttListener, start_nats

            nats = start_nats(
                store_dir=data / "nats",
                sync_interval=s.nats.sync_interval,
                roles=nats_roles(s.nats, partitions=s.pipeline.partitions),
                mqtt=MqttListener(s.mqtt.host, s.mqtt.port) if s.mqtt.enabled else None,
            )
            self.services.append(nats)
            nats_url = nats.url
        redis_url = s.redis_url
        if redis_url is None:
            from eventray.cluster.services.redis_server import start_redis

            redis = start_redis(data_dir=data / "redis", persist=True, users=VALKEY_USERS)
            self.services.append(redis)
            redis_url = redis.url
        admin = Endpoints(
            nats_url=nats_url,
            redis_url=redis_url,
            chdb_path=None if s.store.clickhouse_url else data / "chdb",
            clickhouse_url=s.store.clickhouse_url,
            config_dir=None if s.mongodb_url else data / "config",
            mongodb_url=s.mongodb_url,
            blob_dir=None if s.blobs.endpoint else s.blob_dir.resolve(),
        )
        self.roles = role_endpoints(admin, nats=nats, redis=redis)
        return admin

    def _start_ray(self) -> str:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().gcs_address)
        keep_ray_on_loopback()
        r = self.settings.ray
        # A job submitted with `ray job submit` gets RAY_ADDRESS: attach to that cluster.
        address = r.address or os.environ.get("RAY_ADDRESS")
        with keep_signal_handlers():
            if address:
                use_saved_ray_token()
                ray.init(address=address, namespace=r.namespace, log_to_driver=False)
            else:
                self._local_ray = start_local_ray(
                    namespace=r.namespace,
                    num_cpus=self._local_cpus(),
                    include_dashboard=r.include_dashboard,
                    dashboard_port=r.dashboard_port,
                )
        return str(ray.get_runtime_context().gcs_address)

    def _local_cpus(self) -> int:
        """Logical CPUs of a local head: ``ray.num_cpus``, or the machine's raised to what the
        actors declare at lanes_max (a 2-core machine still runs 4 half-CPU lanes: logical
        CPUs are a scheduling budget, and on one node there is nowhere else to go)."""
        import math

        given = self.settings.ray.num_cpus
        if given is not None:
            return given
        return max(os.cpu_count() or 1, math.ceil(self.settings.cpus_declared()))

    @property
    def wiring(self) -> Wiring:
        """The adapters of this stack, with the admin's credentials (only valid once started);
        ``wiring.for_role(...)`` is what an actor gets."""
        assert self.endpoints is not None
        return Wiring(self.settings, self.endpoints, dict(self.roles))

    def start(self) -> Stack:
        check_embedded(self.settings)  # before anything starts: what this install lacks
        _check_ports_free(self.settings)
        _check_secrets(self.settings)
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from eventray.actors.ingress import IngressActor
        from eventray.actors.store import EventStoreActor

        self.endpoints = endpoints = self._start_services()
        wiring = self.wiring
        wiring.config_store().close()  # creates the embedded store's directory
        _ensure_stream(self.settings, wiring)
        self._start_mqtt(wiring)
        ray_address = self._start_ray()
        s = self.settings
        # Actors find each other by name (an actor handle passed to a constructor would keep
        # the constructor's arguments in the object store, where a restart can lose them).
        # The store actor stays on this node: the embedded chDB and the store's write-ahead
        # log are in this node's data_dir, and a restarted store must find what it left there.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        store = EventStoreActor.options(  # type: ignore[attr-defined]
            name="store", scheduling_strategy=here, num_cpus=s.ray.actor_cpus
        ).remote(s, wiring.for_role("store"))
        ray.get(store.stats.remote())
        stages = {**self._start_rule_actors(s.pipeline.rule_actors),
                  **self._start_script_actors(s.pipeline.script_actors)}  # fmt: skip
        lanes_n = min(s.pipeline.lanes, s.pipeline.partitions)
        self.assignment = {
            f"lane-{i}": [p for p in range(s.pipeline.partitions) if p % lanes_n == i]
            for i in range(lanes_n)
        }
        where = self._lane_strategies(len(self.assignment))
        lanes = {
            name: self._new_lane(name, parts, strategy)
            for (name, parts), strategy in zip(self.assignment.items(), where, strict=True)
        }
        # The ingress (and the API) listen on this node too: ``stack.json`` records their URLs
        # with this node's host, and on Kubernetes one Service on the head pod reaches them.
        ingress = IngressActor.options(  # type: ignore[attr-defined]
            name="ingress",
            runtime_env=_arrowless(),
            num_cpus=s.ray.actor_cpus,
            scheduling_strategy=here,
        ).remote(s, wiring.for_role("ingress"), store="store")
        self.actors = {"store": store, "ingress": ingress, **stages, **lanes}
        self._await_lanes_placed(list(lanes))
        limits = s.pipeline.scaling_limits()
        self._scaler = ScalingPolicy(limits) if limits.enabled else None
        with _port_named(s.ingress.port, INGRESS_PORT_VARIABLE):
            self.ingress_port = int(ray.get(ingress.port.remote()))
        if s.api.enabled:
            self._start_api(wiring)
        if s.metrics.enabled:
            from eventray.cluster.metrics import serve_metrics

            with _port_named(s.metrics.port, METRICS_PORT_VARIABLE):
                self._metrics_server, self.metrics_port = serve_metrics(
                    self.status, host=s.metrics.host, port=s.metrics.port
                )
        info = StackInfo(
            endpoints={
                k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(endpoints).items()
            },
            ingress_url=self.ingress_url,
            ray_address=ray_address,
            pid=os.getpid(),
            metrics_url=self.metrics_url,
            mqtt_url=self.mqtt_url,
            api_url=self.api_url,
            namespace=s.ray.namespace,
        )
        # It holds the servers' URLs with their passwords: the owner's alone.
        path = s.data_dir / "stack.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(asdict(info), indent=2))
        _log.info(
            "stack started: %d lanes, %d partitions",
            len(self.lanes()),
            s.pipeline.partitions,
            extra={"ingress": self.ingress_url, "dashboard": self.dashboard_url},
        )
        return self

    # ------------------------------------------------------------------ per-stage pools
    def _start_rule_actors(self, count: int) -> dict[str, Any]:
        """A new generation of ``count`` rule actors (none: the lanes evaluate rules); each
        owns the partitions ``p % count == i``. Returns them by name, once they answer."""

        from eventray.actors.rules import RulePartitionActor, owned_partitions, rule_actor_name

        if count == 0:
            return {}
        generation = self.rule_layout[0] + 1 if self.rule_layout is not None else 0
        layout = (generation, count)
        partitions = self.settings.pipeline.partitions
        rules = {}
        for i in range(count):
            name = rule_actor_name(i, layout)
            owned = owned_partitions(i, count, partitions)
            # Its partitions are independent: one thread each, so their state round trips
            # overlap (calls for one partition come one at a time, from its one lane).
            rules[name] = RulePartitionActor.options(  # type: ignore[attr-defined]
                name=name,
                runtime_env=_arrowless(),
                max_concurrency=max(1, len(owned)),
                num_cpus=self.settings.ray.actor_cpus,
            ).remote(self.settings, self.wiring.for_role("rules"), owned)
        self._await_placed(rules, self.settings.ray.actor_cpus, setting="actor_cpus",
                           fewer="the rule actors' count")  # fmt: skip
        self.rule_layout = layout
        return rules

    def _start_script_actors(self, count: int) -> dict[str, Any]:
        """``count`` more script-executor actors; returns them by name, once they answer."""

        from eventray.actors.script_pool import ScriptExecutorActor, script_actor_name

        added = {}
        for _ in range(count):
            name = script_actor_name(self._script_index)
            self._script_index += 1
            # A script executor does a lane's CPU work: it declares what a lane does.
            added[name] = ScriptExecutorActor.options(  # type: ignore[attr-defined]
                name=name, runtime_env=_arrowless(), num_cpus=self.settings.ray.lane_cpus
            ).remote(self.settings, self.wiring.for_role("lane"))
        self._await_placed(added, self.settings.ray.lane_cpus, setting="lane_cpus",
                           fewer="the pool's count")  # fmt: skip
        return added

    def _await_placed(
        self, actors: dict[str, Any], cpus: float, *, setting: str, fewer: str
    ) -> None:
        """Wait until new pool actors answer; those Ray cannot place in
        ``ray.placement_timeout_s`` are killed and named in the error (a resize beyond what the
        cluster has fails with the reason instead of hanging).

        Raises:
            LanePlacementError: some were not placed (or did not start) in time.
        """
        import ray

        late = self._unanswered({name: actor.stats.remote() for name, actor in actors.items()})
        if late:
            for actor in actors.values():
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            timeout = self.settings.ray.placement_timeout_s
            raise LanePlacementError(late, cpus, timeout, setting=setting, fewer=fewer)

    def _unanswered(self, calls: dict[str, Any]) -> list[str]:
        """The names whose call did not answer within ``ray.placement_timeout_s`` (an actor
        no node can place never runs it); when all did, their results are read, so an actor
        that failed to start raises its error here."""
        import ray

        timeout = self.settings.ray.placement_timeout_s
        ready, _ = ray.wait(list(calls.values()), num_returns=len(calls), timeout=timeout)
        late = [name for name, ref in calls.items() if ref not in ready]
        if not late:
            ray.get(list(calls.values()))
        return late

    def stage_actors(self, stage: str) -> dict[str, Any]:
        """The running actors of a stage's pool (``scripts`` or ``rules``), by name."""
        from eventray.actors.script_pool import SCRIPT_ACTOR_PREFIX

        prefix = {"scripts": SCRIPT_ACTOR_PREFIX, "rules": "rules-"}[stage]
        return {n: a for n, a in self.actors.items() if n.startswith(prefix)}

    def scale_stage(self, stage: str, count: int) -> int:
        """Run ``count`` actors in a stage's pool (``scripts`` or ``rules``) from now on,
        without losing events; returns the count.

        Scripts: new actors join (lanes find them by name within ~2 s); removed ones are
        killed, and a batch one of them was running runs again on another. Rules: a new
        generation of ``count`` actors starts beside the old, the lanes are pointed at it, then
        the old is killed (a batch evaluated on the old and committed on the new is evaluated
        again from the committed state, as after a restart).

        Raises:
            InvalidInput: an unknown stage, a count the stage cannot take, or a stage that
                runs in the lanes (that is a topology change: restart with the setting).
        """
        import ray

        p = self.settings.pipeline
        if stage not in ("scripts", "rules"):
            raise InvalidInput(f"unknown stage {stage!r}: scale 'scripts' or 'rules'")
        running = self.stage_actors(stage)
        if not running:
            setting = "script_actors" if stage == "scripts" else "rule_actors"
            raise InvalidInput(
                f"the {stage} run in the lanes: start the stack with pipeline.{setting} > 0 "
                f"to scale them apart"
            )
        if count < 1:
            raise InvalidInput(f"a {stage} pool needs at least 1 actor, not {count}")
        if stage == "rules" and count > p.partitions:
            raise InvalidInput(
                f"{count} rule actors exceed pipeline.partitions = {p.partitions}: each owns "
                "whole partitions"
            )
        if stage == "scripts":
            self.actors.update(self._start_script_actors(max(0, count - len(running))))
            surplus = sorted(running, key=lambda n: int(n.rsplit("-", 1)[1]))[count:]
        else:
            self.actors.update(self._start_rule_actors(count))
            layout = self.rule_layout
            ray.get([lane.use_rules.remote(layout) for lane in self.lanes()], timeout=60)
            surplus = list(running)
        for name in surplus:
            with contextlib.suppress(Exception):
                ray.kill(self.actors.pop(name))
        _log.info("%s pool scaled from %d to %d actors", stage, len(running), count)
        return count

    def _new_lane(self, name: str, partitions: list[int], strategy: Any = "DEFAULT") -> Any:
        """Create lane actor ``name`` owning ``partitions`` (not started), placed by
        ``strategy`` (see :meth:`_lane_strategies`); it declares ``ray.lane_cpus``, so the
        autoscaler sees a lane it cannot place."""
        from eventray.actors.lane import LaneActor

        s = self.settings
        return LaneActor.options(  # type: ignore[attr-defined]
            name=name,
            runtime_env=_arrowless(),
            num_cpus=s.ray.lane_cpus,
            scheduling_strategy=strategy,
        ).remote(
            s,
            self.wiring.for_role("lane"),
            partitions,
            store="store",
            rule_layout=self.rule_layout,
        )

    def _lane_strategies(self, count: int, running: Mapping[str, str] | None = None) -> list[Any]:
        """Where the next ``count`` lanes go, with ``ray.lane_strategy = SPREAD``: each on the
        node with room for ``ray.lane_cpus`` that runs the fewest lanes (``running``: node per
        lane), with a soft affinity, so Ray may restart it elsewhere when that node is lost.
        Ray's own SPREAD is best-effort (it put two lanes on one of two idle nodes here);
        without room anywhere it is what the lane gets, so the autoscaler sees the demand."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        r = self.settings.ray
        if r.lane_strategy != "SPREAD":
            return [r.lane_strategy] * count
        try:
            from ray._private.state import available_resources_per_node

            per_node = available_resources_per_node()  # type: ignore[no-untyped-call]
            free = {node: float(res.get("CPU", 0.0)) for node, res in per_node.items()}
        except Exception:  # a Ray without it: its own spreading
            return ["SPREAD"] * count
        lanes_on = Counter((running or {}).values())
        out: list[Any] = []
        for _ in range(count):
            fits = [node for node, cpus in free.items() if cpus >= r.lane_cpus - 1e-9]
            if not fits:
                out.append("SPREAD")
                continue
            node = min(fits, key=lambda n: (lanes_on[n], -free[n], n))
            lanes_on[node] += 1
            free[node] -= r.lane_cpus
            out.append(NodeAffinitySchedulingStrategy(node, soft=True))
        return out

    def _lane_nodes(self) -> dict[str, str]:
        """The node each lane runs on (from the lanes themselves)."""
        import ray

        names = list(self.assignment)
        nodes = ray.get([self.actors[n].node.remote() for n in names], timeout=30)
        return dict(zip(names, (str(x) for x in nodes), strict=True))

    def _await_lanes_placed(self, names: list[str]) -> None:
        """Start the lanes ``names``; one no node can place within ``ray.placement_timeout_s``
        is an error naming what it asks and what the cluster has free, not a hang.

        Raises:
            LanePlacementError: a lane was not placed (or did not start) in time.
        """
        late = self._unanswered({name: self.actors[name].start.remote() for name in names})
        if late:
            r = self.settings.ray
            raise LanePlacementError(late, r.lane_cpus, r.placement_timeout_s)

    def _start_api(self, wiring: Wiring) -> None:
        """The management API beside the ingress, with the ``api`` role's credentials; device
        passwords it is given are hashed as ``apply`` hashes them."""
        import functools

        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from eventray.actors.api import ApiActor
        from eventray.actors.replay import ReplayActor
        from eventray.cluster.mqtt_accounts import hash_documents
        from eventray.cluster.replaying import stack_replay_service

        s = self.settings
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        api = ApiActor.options(  # type: ignore[attr-defined]
            name="api", runtime_env=_arrowless(), scheduling_strategy=here,
            num_cpus=s.ray.actor_cpus,
        ).remote(
            s, wiring.for_role("api"),
            prepare=functools.partial(hash_documents, cost=s.mqtt.bcrypt_cost),
            ingress_url=self.ingress_url,
        )  # fmt: skip
        self.actors["api"] = api
        # Redrive and replay for the API: in an actor of their own, with the replay role's
        # NATS user (see eventray.actors.replay for why not in the API's process).
        self.actors["replay"] = ReplayActor.options(  # type: ignore[attr-defined]
            name="replay", runtime_env=_arrowless(), num_cpus=s.ray.actor_cpus
        ).remote(functools.partial(stack_replay_service, wiring.for_role("replay")))
        with _port_named(s.api.port, API_PORT_VARIABLE):
            self.api_port = int(ray.get(api.port.remote()))

    @property
    def api_url(self) -> str:
        """The management API's base URL ("" when disabled)."""
        return f"http://{self.settings.api.host}:{self.api_port}" if self.api_port else ""

    def _nats(self) -> RunningNats | None:
        from eventray.cluster.services.nats_server import RunningNats

        return next((x for x in self.services if isinstance(x, RunningNats)), None)

    def _start_mqtt(self, wiring: Wiring) -> None:
        """The embedded broker's MQTT side: its store made (one login of the probe user), the
        bridge's consumer on it, and the devices kept equal to the configuration."""
        nats = self._nats()
        if nats is None or nats.mqtt is None:
            return
        from eventray.cluster.mqtt_accounts import DeviceSync, mqtt_login
        from eventray.cluster.services.nats_server import MQTT_PROBE
        from eventray.pipeline.catalog import catalog_from_store

        code = mqtt_login(nats.mqtt.host if nats.mqtt.host not in ("0.0.0.0", "::") else "127.0.0.1",
                          nats.mqtt.port, MQTT_PROBE, nats.passwords[MQTT_PROBE])  # fmt: skip
        if code != 0:
            raise RuntimeError(f"the MQTT listener refused the platform's probe login ({code})")
        _ensure_bridge_consumer(wiring)

        def load() -> tuple[Any, int]:
            store = wiring.config_store()
            try:
                return catalog_from_store(store)
            finally:
                store.close()

        def server() -> RunningNats:
            current = self._nats()
            assert current is not None
            return current

        self._devices = DeviceSync(
            server, load, cost=self.settings.mqtt.bcrypt_cost,
            interval_s=self.settings.mqtt.sync_interval_s,
        )  # fmt: skip
        self._devices.start()

    @property
    def mqtt_url(self) -> str:
        """``mqtt://host:port`` devices connect to ("" without the embedded listener)."""
        nats = self._nats()
        return nats.mqtt_url if nats is not None else ""

    @property
    def ingress_url(self) -> str:
        return f"http://{self.settings.ingress.host}:{self.ingress_port}"

    @property
    def dashboard_url(self) -> str:
        """The Ray dashboard ("" when it is not running, or Ray is not connected)."""
        with contextlib.suppress(Exception):  # a private helper: if it moves, no URL
            from ray._private.worker import get_dashboard_url

            url = get_dashboard_url()  # type: ignore[no-untyped-call]
            if url:
                return url if url.startswith("http") else f"http://{url}"
        return ""

    @property
    def metrics_url(self) -> str:
        """Prometheus ``/metrics`` of this stack ("" when disabled)."""
        if not self.metrics_port:
            return ""
        return f"http://{self.settings.metrics.host}:{self.metrics_port}/metrics"

    def lanes(self) -> list[Any]:
        return [a for name, a in self.actors.items() if name.startswith("lane-")]

    def supervise(self) -> None:
        """One health round: a dead embedded server is started again, and restarted actors get
        ``start`` again (Ray re-runs only __init__)."""
        import ray

        self._revive_services()
        # A lane Ray restarted comes back with the partitions it was created with: it is told
        # the current ones before anything starts it again.
        owned = [self.actors[name].assign.remote(parts) for name, parts in self.assignment.items()]
        with contextlib.suppress(Exception):
            ray.get(owned, timeout=30)
        checks = [
            a.health.remote()
            for n, a in self.actors.items()
            if n.startswith(("lane-", "ingress", "api"))
        ]
        with contextlib.suppress(Exception):
            ray.get(checks, timeout=30)
        interval = self.settings.pipeline.rebalance_interval_s
        if interval and time.monotonic() - self._balanced_at >= interval:
            with contextlib.suppress(Exception):
                self.rebalance()
        if self._scaler is not None:
            try:
                self.scale()
            except Exception as exc:  # the next round measures again
                _log.warning("lane scaling round failed: %s", exc)

    # ------------------------------------------------------------------ lane scaling
    def scale(self, now: float | None = None) -> Decision | None:
        """One round of lag-driven scaling (:mod:`eventray.pipeline.scaling`): measure the
        lag and the lanes' busy share, and add or remove one lane if the policy says so.
        Returns the decision (None when scaling is off)."""
        import ray

        if self._scaler is None:
            return None
        now = time.monotonic() if now is None else now
        names = list(self.assignment)
        # The lag as the ingress reads it for admission every half second: asking the lanes
        # (a consumer-info round trip per partition on their busy connections) took up to
        # tens of seconds at capacity, just when the answer matters.
        lag = int(ray.get(self.actors["ingress"].health.remote(), timeout=30)["lag"])
        handled = ray.get([self.actors[n].handled.remote() for n in names], timeout=30)
        if self._utilisation is None:
            self._utilisation = Utilisation(backlog=self._scaler.limits.up_lag)
        busy = self._utilisation.update(now, dict(zip(names, handled, strict=True)), lag)
        decision = self._scaler.observe(now, lag, len(names), busy)
        if decision.direction == "hold":
            return decision
        _log.info(
            "lane scaling: %s from %d to %d lanes (lag %d events, busy %s): %s",
            decision.direction, len(names), decision.lanes, decision.lag,
            "?" if busy is None else f"{busy:.0%}", decision.reason,
        )  # fmt: skip
        self._scaler.applied(now)
        self.decisions.append(decision)
        try:
            if decision.direction == "up":
                self.add_lane()
            else:
                self.remove_lane()
        except LanePlacementError as exc:
            _log.warning("lane scaling: %s", exc)
        return decision

    def scale_between(self, lanes_min: int, lanes_max: int) -> None:
        """Change the scaling's bounds on the running stack (ops widening or pinning the
        lane count); the next rounds bring the count within them, one lane at a time.

        Raises:
            ValueError: bounds that cannot work (as ``pipeline.lanes_min/max`` at load).
        """
        p = self.settings.pipeline
        if lanes_max > p.partitions:
            raise ValueError(f"lanes_max ({lanes_max}) must not exceed partitions ({p.partitions})")
        limits = dataclasses.replace(p.scaling_limits(), lanes_min=lanes_min, lanes_max=lanes_max)
        self._scaler = ScalingPolicy(limits)

    def add_lane(self) -> str:
        """Create the next lane and move partitions to it (:func:`plan_join`): each partition
        is released by its lane first (batches in hand finished and acknowledged), then the
        new lane takes it and rewinds to its first unacknowledged event.

        Raises:
            LanePlacementError: no node could place it in time (it is removed again).
        """
        import ray

        taken = set(self.assignment)
        name = next(f"lane-{i}" for i in range(len(taken) + 1) if f"lane-{i}" not in taken)
        [strategy] = self._lane_strategies(1, self._lane_nodes())
        self.actors[name] = self._new_lane(name, [], strategy)
        try:
            self._await_lanes_placed([name])
        except LanePlacementError:
            with contextlib.suppress(Exception):
                ray.kill(self.actors.pop(name))
            raise
        self.assignment[name] = []
        self._apply_moves(plan_join(self.assignment, name, self._last_rates()))
        return name

    def remove_lane(self) -> str:
        """Remove the highest-numbered lane: its partitions go to the others first (it
        finishes and acknowledges its batches in hand as it releases them; they rewind to
        the first unacknowledged event), then it drains its trigger deliveries and is killed."""
        import ray

        name = max(self.assignment, key=lambda n: int(n.removeprefix("lane-")))
        self._apply_moves(plan_leave(self.assignment, name, self._last_rates()))
        lane = self.actors[name]
        with contextlib.suppress(Exception):
            ray.get(lane.drain.remote(self.settings.pipeline.stop_timeout_s),
                    timeout=self.settings.pipeline.stop_timeout_s + _ANSWER_GRACE_S)  # fmt: skip
        del self.assignment[name]
        del self.actors[name]
        ray.kill(lane)
        return name

    def _apply_moves(self, moves: list[Move]) -> None:
        """Every losing lane releases first, then every gaining lane takes: no partition is
        ever pulled by two lanes."""
        import ray

        if not moves:
            return
        after = {name: list(parts) for name, parts in self.assignment.items()}
        for move in moves:
            after[move.source].remove(move.partition)
            after[move.target].append(move.partition)
        losing = sorted({m.source for m in moves})
        gaining = sorted({m.target for m in moves})
        ray.get([self.actors[n].assign.remote(after[n]) for n in losing], timeout=60)
        for n in losing:
            self.assignment[n] = sorted(after[n])
        ray.get([self.actors[n].assign.remote(after[n]) for n in gaining], timeout=60)
        for n in gaining:
            self.assignment[n] = sorted(after[n])
        self.moves.extend(moves)
        _log.info(
            "partitions moved: %s",
            ", ".join(f"p{m.partition} {m.source}->{m.target}" for m in moves),
        )

    def _last_rates(self) -> dict[int, float]:
        """Per-partition rates of the rebalancer's last reading (none: an even split)."""
        last = self._rates._last
        if last is None:
            return {}
        return {p: float(n) for p, n in last[1].items()}

    def scaling_status(self) -> dict[str, Any]:
        """What ``status()`` reports under ``scaling`` (and the metrics export)."""
        low, high = self.settings.pipeline.lanes_bounds
        if self._scaler is not None:
            low, high = self._scaler.limits.lanes_min, self._scaler.limits.lanes_max
        counts = {"up": 0, "down": 0}
        for d in self.decisions:
            counts[d.direction] = counts.get(d.direction, 0) + 1
        return {
            "enabled": self._scaler is not None,
            "lanes": len(self.assignment),
            "lanes_min": low,
            "lanes_max": high,
            "decisions": counts,
            "recent": [asdict(d) for d in self.decisions[-10:]],
        }

    def rebalance(self) -> Move | None:
        """Measure each partition's rate since the last call and move at most one partition
        from the busiest lane to the idlest (see :mod:`eventray.pipeline.balance`)."""
        import ray

        self._balanced_at = time.monotonic()
        names = list(self.assignment)
        statuses = ray.get([self.actors[n].status.remote() for n in names], timeout=30)
        counts: dict[int, int] = {}
        for status in statuses:
            for partition, n in status.get("events_by_partition", {}).items():
                counts[int(partition)] = counts.get(int(partition), 0) + int(n)
        rates = self._rates.update(time.monotonic(), counts)
        if rates is None:
            return None
        move = plan_move(self.assignment, rates)
        if move is None:
            return None
        source = [p for p in self.assignment[move.source] if p != move.partition]
        target = sorted([*self.assignment[move.target], move.partition])
        ray.get(self.actors[move.source].assign.remote(source), timeout=60)
        self.assignment[move.source] = source
        ray.get(self.actors[move.target].assign.remote(target), timeout=60)
        self.assignment[move.target] = target
        self.moves.append(move)
        _log.info(
            "partition %d moved from %s to %s (measured events/s per partition: %s)",
            move.partition, move.source, move.target,
            {p: round(r) for p, r in sorted(rates.items())},
        )  # fmt: skip
        return move

    def _revive_services(self) -> None:
        """Start a dead embedded server again on its port and data directory: the actors keep
        their URLs and reconnect (JetStream and the append-only file keep what was acknowledged).
        A server that cannot start yet is tried again on the next round."""
        for index, service in enumerate(self.services):
            code = service.process.poll()
            if code is None:
                continue
            _log.warning(
                "%s on port %d exited (code %s); starting it again",
                service.name,
                service.port,
                code,
            )
            try:
                self.services[index] = service.restarted()
            except (RuntimeError, OSError) as exc:
                _log.warning(
                    "%s did not start again (next round tries again): %s", service.name, exc
                )

    def status(self) -> dict[str, Any]:
        """Every lane's, the ingress's and the store's counters, and the lane scaling's state;
        an actor that does not answer within ``metrics.actor_timeout_s`` is named under
        ``unanswered`` (see :func:`~eventray.cluster.status_gather.gather_status`)."""
        lanes = {name: a for name, a in self.actors.items() if name.startswith("lane-")}
        status = gather_status(
            lanes,
            self.actors.get("ingress"),
            self.actors.get("store"),
            timeout_s=self.settings.metrics.actor_timeout_s,
        )
        status["scaling"] = self.scaling_status()
        return status

    def apply(self, documents: list[dict[str, Any]]) -> int:
        """Store entity documents and tell the running actors to reload."""
        return apply_documents(self.wiring, documents)

    def wait_revision(self, revision: int, *, timeout_s: float = 30.0) -> bool:
        """Wait until the ingress and every lane run the catalog of ``revision`` (after
        :meth:`apply`)."""
        import ray

        hosts = [self.actors["ingress"], *self.lanes()]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            revisions = [h["revision"] for h in ray.get([a.health.remote() for a in hosts])]
            if min(revisions) >= revision:
                return True
            time.sleep(0.1)
        return False

    def wait_idle(self, *, timeout_s: float = 60.0, settle_s: float = 0.5) -> bool:
        """Wait until every partition is drained (trigger deliveries may still be going)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status()
            lag = sum(sum(lane["lag"].values()) for lane in status["lanes"])
            if lag == 0 and not status["unanswered"]:
                time.sleep(settle_s)
                status = self.status()
                lag = sum(sum(lane["lag"].values()) for lane in status["lanes"])
                if lag == 0 and not status["unanswered"]:
                    return True
            time.sleep(0.2)
        return False

    def stop(self, *, drain: bool = True) -> StopReport:
        """Drain lanes and triggers, stop the actors, Ray (if we started it) and services.

        The lanes get ``pipeline.stop_timeout_s`` to finish their batches in hand; what they
        have not finished by then is abandoned unacknowledged (the stream delivers it again at
        the next start) and reported, so a stuck partition cannot hold the stop: it takes the
        timeout plus a few seconds at most (the ingress's and store's own stops are bounded
        too). ``drain=False`` skips the draining: after an interrupted start there is nothing
        in flight, and actors still being built would hold the stop for their whole start."""
        started = time.monotonic()
        running = bool(self.actors or self.services or self._local_ray)
        report = StopReport()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server, self.metrics_port = None, 0
        if self.actors:
            self._stop_actors(drain=drain, report=report)
        if self._local_ray is not None:
            self._local_ray.stop()
            self._local_ray = None
        if self._devices is not None:
            self._devices.stop()
            self._devices = None
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                service.stop()
        self.services = []
        self._forget_info()
        report.seconds = time.monotonic() - started
        if running:  # (a start refused before anything ran has nothing to report)
            _log.info("stack stopped in %.1f s", report.seconds)
        return report

    def _stop_actors(self, *, drain: bool, report: StopReport) -> None:
        import ray

        if ray.is_initialized():
            if drain:
                self._drain_actors(report)
            for actor in self.actors.values():
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            if drain and self.endpoints is not None:
                report.unacknowledged = _unacknowledged(self.settings, self.wiring)
        self.actors = {}

    def _drain_actors(self, report: StopReport) -> None:
        """The lanes drain, each within the deadline, while the ingress stops; then the store
        flushes. A lane that does not answer by the deadline (plus a grace) is cut off."""
        import ray

        timeout = self.settings.pipeline.stop_timeout_s
        names = [name for name in self.actors if name.startswith("lane-")]
        drains = {}
        for name in names:
            with contextlib.suppress(Exception):
                drains[name] = self.actors[name].drain.remote(timeout)
        ingress = None  # stops taking events meanwhile
        with contextlib.suppress(Exception):
            ingress = self.actors["ingress"].drain.remote()
        ready: list[Any] = []
        if drains:
            ready, _ = ray.wait(
                list(drains.values()), num_returns=len(drains), timeout=timeout + _ANSWER_GRACE_S
            )
        for name in names:
            if name not in drains or drains[name] not in ready:
                report.unanswered[name] = f"did not answer within {timeout + _ANSWER_GRACE_S:g} s"
                continue
            try:
                status = ray.get(drains[name])
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                report.unanswered[name] = f"failed to drain ({first[:160]})"
                continue
            if status.get("abandoned"):
                report.abandoned[name] = list(status["abandoned"])
        if ingress is not None:
            with contextlib.suppress(Exception):
                ray.get(ingress, timeout=_SERVICE_STOP_S)
        with contextlib.suppress(Exception):
            ray.get(self.actors["store"].close.remote(), timeout=_SERVICE_STOP_S)

    def _forget_info(self) -> None:
        """Remove ``stack.json`` if this process wrote it: a start that failed (a port taken by
        another stack on the same data directory) must not hide the stack that runs."""
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            info = read_stack_info(self.settings.data_dir)
            if info is not None and info.pid == os.getpid():
                (self.settings.data_dir / "stack.json").unlink()


def _check_ports_free(settings: Settings) -> None:
    """Fail before anything starts when a fixed port is taken, naming the setting to change."""
    wanted = [(settings.ingress.host, settings.ingress.port, INGRESS_PORT_VARIABLE)]
    if settings.mqtt.enabled and settings.nats.url is None:
        wanted.append((settings.mqtt.host, settings.mqtt.port, MQTT_PORT_VARIABLE))
    if settings.metrics.enabled:
        wanted.append((settings.metrics.host, settings.metrics.port, METRICS_PORT_VARIABLE))
    if settings.api.enabled:
        wanted.append((settings.api.host, settings.api.port, API_PORT_VARIABLE))
    ray = settings.ray
    if ray.include_dashboard and ray.address is None and not os.environ.get("RAY_ADDRESS"):
        wanted.append(("127.0.0.1", ray.dashboard_port, "EVENTRAY_RAY__DASHBOARD_PORT"))
    for host, port, variable in wanted:
        if port and not _bindable(host, port):
            raise PortTakenError(port, variable)


def _bindable(host: str, port: int) -> bool:
    # With SO_REUSEADDR, as the servers bind: a closed connection in TIME_WAIT is no obstacle.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


@contextlib.contextmanager
def _port_named(port: int, variable: str) -> Iterator[None]:
    """Bind failures that a check before the start could not foresee (the port was taken
    meanwhile) get the same message as those it found."""
    try:
        yield
    except Exception as exc:
        cause = getattr(exc, "cause", None) or exc  # a Ray task error carries the actor's
        if port and isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            raise PortTakenError(port, variable) from exc
        raise


def _arrowless() -> dict[str, Any]:
    """The runtime environment of actors that never touch Arrow (see ``forgo_arrow``); Ray
    merges the job's into it."""
    from eventray.actors.host import NO_ARROW

    return {"env_vars": {NO_ARROW[0]: NO_ARROW[1]}}


def _check_secrets(settings: Settings) -> None:
    """A secrets file the lanes would refuse (readable by others, malformed), a secrets key
    that is not one, or a secret store the key does not open stops ``up`` before anything
    starts, with its path or setting and the fix, instead of failing every delivery."""
    from eventray.cluster.secrets_wiring import check_secrets

    check_secrets(settings)


def _ensure_stream(settings: Settings, wiring: Wiring) -> None:
    """Create (or update) the stream with the inbound partitions and the trigger queue."""
    import asyncio

    n = settings.nats

    async def ensure() -> None:
        bus = wiring.stream()
        await bus.connect()
        try:
            await bus.ensure_stream(
                storage=n.storage,
                replicas=n.replicas,
                max_bytes=n.max_bytes,
                max_age_s=n.max_age_s,
                duplicate_window_s=n.duplicate_window_s,
                extra_subjects=(n.trigger_subject,),
            )
        finally:
            await bus.close()

    asyncio.run(ensure())


def _ensure_bridge_consumer(wiring: Wiring) -> None:
    """The MQTT bridge's durable consumer on the broker's store (kept if it exists)."""
    import asyncio

    from eventray.pipeline.adapters.nats_bus import JetStreamBus
    from eventray.pipeline.adapters.nats_uplinks import ensure_bridge_consumer

    async def ensure() -> None:
        bus = wiring.stream()
        assert isinstance(bus, JetStreamBus)
        await bus.connect()
        try:
            await ensure_bridge_consumer(bus.js)
        finally:
            await bus.close()

    asyncio.run(ensure())


def _unacknowledged(settings: Settings, wiring: Wiring) -> dict[int, tuple[int, int, int]]:
    """Per partition, what its consumer has delivered but not acknowledged: (events, first
    and last stream sequence); read from the stream once the lanes are gone. Empty when the
    stream does not answer within a few seconds (a stop must not wait on it)."""
    import asyncio

    async def read() -> dict[int, tuple[int, int, int]]:
        bus = wiring.stream()
        await bus.connect(timeout_s=2)
        try:
            out = {}
            for partition in range(settings.pipeline.partitions):
                held = await bus.unacknowledged(partition)
                if held is not None:
                    out[partition] = held
            return out
        finally:
            await bus.close()

    try:
        return asyncio.run(asyncio.wait_for(read(), 5))
    except Exception as exc:  # a report line, never a failed stop
        _log.warning("could not read what the stream will redeliver: %s", exc)
        return {}


def apply_documents(wiring: Wiring, documents: list[dict[str, Any]], *, notify: bool = True) -> int:
    """Store entity documents and tell every running actor to reload; returns the new
    revision. The catalog they make together with what is stored is checked first (scripts
    compiled), so a configuration that cannot work is refused before anything is stored.

    Raises:
        ConfigError: every problem of the merged catalog (nothing is applied).
    """
    import asyncio

    from eventray.cluster.mqtt_accounts import hash_documents

    # Device passwords are stored as bcrypt hashes, never as they were written.
    documents = hash_documents(documents, wiring.settings.mqtt.bcrypt_cost)
    store = wiring.config_store()
    try:
        check_merged(store.documents(), documents)
        revision = store.put(documents)
    finally:
        store.close()

    async def tell() -> None:
        stream = wiring.stream()
        await stream.connect(timeout_s=3)
        try:
            await stream.config_changed()
        finally:
            await stream.close()

    if notify:
        with contextlib.suppress(Exception):  # no stack running: nothing to tell
            asyncio.run(tell())
    return revision


def check_merged(existing: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """The catalog after applying ``new`` over ``existing`` must build (with script checks).

    Raises:
        ConfigError: every problem found.
    """
    merged = {(d.get("kind"), d.get("id")): d for d in existing}
    merged.update({(d.get("kind"), d.get("id")): d for d in new})
    issues: list[ConfigIssue] = []
    entities = []
    for doc in merged.values():
        entity = entity_from_dict("apply", doc, issues)
        if entity is not None:
            entities.append(("apply", entity))
    if issues:
        raise ConfigError(issues)
    build_catalog(entities, compile_scripts=True)
