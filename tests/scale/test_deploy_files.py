"""The deployment files parse and hold together: replicas, the shared secret, the health probe,
and a configuration cargohold's own loader accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cargohold.config import load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def replica_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in doc["services"].items()
        if svc.get("image", "").startswith("cargohold")
    }


def test_dockerfile_is_a_drop_in_for_the_registry2_image() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["cargohold", "serve"\]', text, re.M)
    assert 'CMD ["/etc/docker/registry/config.yml"]' in text
    assert re.search(r"^EXPOSE 5000$", text, re.M)
    assert re.search(r"^USER \d+", text, re.M)  # not root
    assert "/debug/health" in text
    config = load_config(str(DEPLOY / "config.yml"), {})
    assert config.storage.rootdirectory == "/var/lib/registry"
    assert config.http.addr == ":5000"


def test_compose_runs_three_replicas_sharing_s3_redis_and_secret() -> None:
    doc = compose()
    replicas = replica_services(doc)
    assert len(replicas) >= 3
    envs = [svc["environment"] for svc in replicas.values()]
    assert all(env == envs[0] for env in envs)  # one configuration for all
    env = {k: str(v) for k, v in envs[0].items()}
    assert env["REGISTRY_HTTP_SECRET"].startswith("${REGISTRY_HTTP_SECRET")
    for name in ("redis", "haproxy"):
        assert name in doc["services"]
    s3 = doc["services"]["s3"]
    assert "minio" in s3["image"] or "moto" in s3["image"]
    assert env["REGISTRY_STORAGE_S3_REGIONENDPOINT"] == "http://s3:9000"
    assert env["REGISTRY_REDIS_ADDR"].split(":")[0] in doc["services"]
    assert any("haproxy.cfg" in v for v in doc["services"]["haproxy"]["volumes"])
    assert all("/debug/health" in " ".join(s["healthcheck"]["test"]) for s in replicas.values())

    # What the replicas would load: the same REGISTRY_* rules as registry:2.
    env["REGISTRY_HTTP_SECRET"] = "from-the-environment"
    config = load_config(None, env, default_root="/unused")
    assert config.storage.driver == "s3"
    assert config.storage.params["bucket"] == "registry"
    assert config.storage.params["forcepathstyle"] is True
    assert config.storage.cache_blobdescriptor == "redis"
    assert config.redis is not None and config.redis.addr == "redis:6379"
    assert config.storage.redirect_disable and config.storage.delete_enabled
    assert config.http.secret == "from-the-environment"


def test_haproxy_balances_every_replica_with_health_checks() -> None:
    text = (DEPLOY / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s+server (\S+) (\S+):5000", text, re.M)
    assert sorted(name for name, _ in servers) == sorted(replica_services(compose()))
    assert "option httpchk GET /debug/health" in text
    assert "balance roundrobin" in text
    assert "option http-server-close" in text
    haproxy = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if haproxy is None:
        pytest.skip("haproxy is not installed: syntax not checked")
    check = subprocess.run(
        [haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_kubernetes_manifests(tmp_path: Path) -> None:
    objects = k8s_objects()
    deployment = objects[("Deployment", "cargohold")]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/debug/health"
    assert "httpGet" not in container["livenessProbe"]  # an S3 outage must not restart pods

    env = {e["name"]: e for e in container["env"]}
    ref = env["REGISTRY_HTTP_SECRET"]["valueFrom"]["secretKeyRef"]
    secret = objects[("Secret", ref["name"])]
    assert ref["key"] in secret["stringData"]
    for e in env.values():  # every secret reference resolves
        if "valueFrom" in e:
            key = e["valueFrom"]["secretKeyRef"]
            assert key["key"] in objects[("Secret", key["name"])]["stringData"]

    service = objects[("Service", "cargohold")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert "sessionAffinity" not in service["spec"] or service["spec"]["sessionAffinity"] == "None"

    hpa = objects[("HorizontalPodAutoscaler", "cargohold")]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "cargohold")
    assert (
        hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    )
    assert container["resources"]["requests"]["cpu"]  # HPA on CPU needs a request

    # The mounted config file is one cargohold accepts, with the secrets from the environment.
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(volumes) == set(mounts) == {"config", "blob-cache"}
    volume, mount = volumes["config"], mounts["config"]
    config_map = objects[("ConfigMap", volume["configMap"]["name"])]
    # Each pod's local blob cache is an emptyDir under the mount, smaller than its limit.
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    blobdir = plain["REGISTRY_STORAGE_CACHE_BLOBDIR"]
    assert blobdir.startswith(mounts["blob-cache"]["mountPath"] + "/")
    assert "emptyDir" in volumes["blob-cache"]
    limit = volumes["blob-cache"]["emptyDir"]["sizeLimit"]
    assert limit.endswith("Gi") and plain["REGISTRY_STORAGE_CACHE_BLOBDIRSIZE"].endswith("GiB")
    assert int(plain["REGISTRY_STORAGE_CACHE_BLOBDIRSIZE"][:-3]) < int(limit[:-2])
    (filename, text) = next(iter(config_map["data"].items()))
    assert container["args"] == [f"{mount['mountPath']}/{filename}"]
    path = tmp_path / filename
    path.write_text(text)
    secrets = {name: e.get("value", "x") for name, e in env.items()}  # secret refs: "x"
    config = load_config(str(path), secrets)
    assert config.storage.driver == "s3" and config.storage.cache_blobdescriptor == "redis"
    assert config.redis is not None
    redis_host = config.redis.addr.split(":")[0]
    assert ("Service", redis_host) in objects
    assert config.http.secret == "x"
    assert config.storage.cache_blobdir == blobdir and config.storage.cache_blobdirsize > 0

    # Graceful shutdown: the preStop pause and the drain both fit in the grace period.
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert config.http.draintimeout > 0
    assert grace > float(pause[1]) + config.http.draintimeout

    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
