"""deploy/kuberay/, validated offline: the RayCluster and the RayJob against KubeRay's CRD
schemas (v1.7.0, vendored in deploy/kuberay/crds/ without descriptions), refusing fields the
schema does not know as ``kubectl --validate=strict`` would (the CRDs leave unknown fields to
be pruned silently); the Secret, ConfigMap and Service minimally; and what ties them to
eventray: every variable is a setting, the settings load and need no embedded server (the
image has none), the Ray version is the one the image installs, and the resources fit what
the actors declare."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from eventray.cluster.embedded import check_embedded
from eventray.config.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "deploy/kuberay"


def _manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KUBERAY / name).read_text())
    return loaded


def _schema(plural: str) -> dict[str, Any]:
    crd = json.loads((KUBERAY / f"crds/ray.io_{plural}.json").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _unknown_fields(instance: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Fields the structural schema does not declare (Kubernetes would drop them unseen)."""
    if isinstance(instance, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        open_ = schema.get("x-kubernetes-preserve-unknown-fields") or extra is not None
        for key, value in instance.items():
            if props is not None and key in props:
                yield from _unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                yield from _unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None and not open_:
                yield f"{path}.{key}"
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(instance):
            yield from _unknown_fields(item, schema["items"], f"{path}[{i}]")


def _validate(manifest: dict[str, Any], plural: str) -> None:
    schema = _schema(plural)
    jsonschema.Draft7Validator(schema).validate(manifest)
    assert list(_unknown_fields(manifest, schema)) == []


def test_the_raycluster_matches_the_crd() -> None:
    manifest = _manifest("raycluster.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    _validate(manifest, "rayclusters")


def test_the_rayjob_matches_the_crd_and_targets_the_raycluster() -> None:
    job = _manifest("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    _validate(job, "rayjobs")
    cluster = _manifest("raycluster.yaml")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert job["spec"]["entrypoint"].split()[:2] == ["eventray", "up"]


@pytest.mark.parametrize(
    "broken",
    [
        lambda m: m["spec"]["workerGroupSpecs"][0].pop("groupName"),  # required
        lambda m: m["spec"]["workerGroupSpecs"][0].update(maxReplicas="8"),  # wrong type
        lambda m: m["spec"].update(enableInTreeAutoscalng=True),  # misspelt: unknown
        lambda m: m["spec"]["autoscalerOptions"].update(upscalingMode="Fast"),  # not in enum
    ],
)
def test_the_validation_catches_a_broken_raycluster(broken: Any) -> None:
    manifest = _manifest("raycluster.yaml")
    broken(manifest)
    with pytest.raises((jsonschema.ValidationError, AssertionError)):
        _validate(manifest, "rayclusters")


def test_the_secret_configmap_and_service_are_well_formed() -> None:
    secret, config = _manifest("secret.yaml"), _manifest("configmap.yaml")
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
    assert (config["apiVersion"], config["kind"]) == ("v1", "ConfigMap")
    for document, field in ((secret, "stringData"), (config, "data")):
        assert set(document) <= {"apiVersion", "kind", "metadata", "type", field}
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", document["metadata"]["name"])
        assert all(isinstance(v, str) for v in document[field].values())  # strings only
    service = _manifest("service.yaml")
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    head = _manifest("raycluster.yaml")["spec"]["headGroupSpec"]["template"]
    labels = head["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    [container] = head["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for name in named:  # an IANA service name, as Kubernetes requires of a port's name
        assert len(name) <= 15 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    # KubeRay's own port names mean Ray's ports: ours must not borrow them
    kuberay = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080}
    assert all(named[n] == port for n, port in kuberay.items() if n in named)
    settings = _settings()
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in named
        served = {"ingress": settings.ingress, "api": settings.api, "metrics": settings.metrics}
        assert served[port["name"]].port == named[port["targetPort"]] == port["port"]
    assert {p["name"] for p in service["spec"]["ports"]} == {"ingress", "api", "metrics"}


def _environment() -> dict[str, str]:
    env: dict[str, str] = {**_manifest("configmap.yaml")["data"]}
    env.update(_manifest("secret.yaml")["stringData"])
    return env


def _settings() -> Settings:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _environment().items():
            patch.setenv(name, value)
        return load_settings()


def _is_setting(variable: str) -> bool:
    model: Any = Settings
    for part in variable.removeprefix("EVENTRAY_").lower().split("__"):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_every_variable_is_a_setting_and_they_load() -> None:
    unknown = [v for v in _environment() if not _is_setting(v)]
    assert unknown == []
    settings = _settings()
    assert settings.nats.url and settings.redis_url and settings.store.clickhouse_url
    assert settings.mongodb_url and settings.blobs.endpoint
    # The image has no embedded server: these settings must need none.
    check_embedded(settings, present=lambda part: False)


def test_the_head_and_its_secrets_reach_the_driver() -> None:
    [head] = _manifest("raycluster.yaml")["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    sources = {next(iter(s.values()))["name"] for s in head["envFrom"]}
    assert sources == {
        _manifest("configmap.yaml")["metadata"]["name"],
        _manifest("secret.yaml")["metadata"]["name"],
    }


def _containers() -> Iterator[dict[str, Any]]:
    spec = _manifest("raycluster.yaml")["spec"]
    yield from spec["headGroupSpec"]["template"]["spec"]["containers"]
    for group in spec["workerGroupSpecs"]:
        yield from group["template"]["spec"]["containers"]
    yield from _manifest("rayjob.yaml")["spec"]["submitterPodTemplate"]["spec"]["containers"]


def test_one_image_and_the_ray_version_the_image_installs() -> None:
    assert len({c["image"] for c in _containers()}) == 1
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert _manifest("raycluster.yaml")["spec"]["rayVersion"] == pins["ray"]


def _cpus(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _declared_cpus(actor: str) -> float:
    import importlib

    module, name = actor.rsplit(".", 1)
    options = getattr(importlib.import_module(module), name)._default_options
    return float(options.get("num_cpus") or 0)


def test_resources_fit_what_the_actors_declare() -> None:
    spec = _manifest("raycluster.yaml")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    [head_container] = head["template"]["spec"]["containers"]
    head_cpus = _cpus(
        head["rayStartParams"].get("num-cpus", head_container["resources"]["limits"]["cpu"])
    )
    assert head_cpus <= _cpus(head_container["resources"]["limits"]["cpu"])
    # Pinned to the driver's node (the head): they must fit there together.
    pinned = [
        "eventray.actors.store.EventStoreActor",
        "eventray.actors.ingress.IngressActor",
        "eventray.actors.api.ApiActor",
    ]
    assert sum(_declared_cpus(a) for a in pinned) <= head_cpus
    settings = _settings()
    lane = _declared_cpus("eventray.actors.lane.LaneActor")
    total = 0.0
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] > group["minReplicas"]  # room to scale
        [container] = group["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert _cpus(requests["cpu"]) == _cpus(limits["cpu"])  # what Ray counts is reserved
        cpus = _cpus(group["rayStartParams"].get("num-cpus", limits["cpu"]))
        assert cpus <= _cpus(limits["cpu"]) and lane <= cpus  # one lane fits a worker
        total += cpus * group["maxReplicas"]
    lanes = min(settings.pipeline.lanes, settings.pipeline.partitions)
    assert lane * lanes <= total + head_cpus  # the lanes fit the cluster at its largest
