"""The cluster definitions in infra/: KubeRay manifests hold what the ray.io/v1 CRDs require and their
entrypoints are commands our jobs accept (parsed by the jobs' own argument parser); the cluster launcher
YAML passes Ray's own validation; the Dockerfile builds both variants with pinned versions (it is not
built here: no Docker engine on the test machine); no secret is written in any of them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from jobs.post_pretrain import ALIASES as POST_PRETRAIN_ALIASES
from pipelines.cli import parse_config
from pipelines.sharding.job import ShardingConfig
from pipelines.training.post_pretrain import PostPretrainConfig
from tests.test_sharding_job import REPO

K8S = REPO / "infra" / "k8s"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
LAUNCHER = REPO / "infra" / "cluster" / "aws.yaml"
# each job script and how its command line is parsed
JOBS = {
    "jobs/shard_howto100m.py": (ShardingConfig, {}),
    "jobs/post_pretrain.py": (PostPretrainConfig, POST_PRETRAIN_ALIASES),
}
RAY_VERSION = "2.60.0"  # the Ray these tests run with; manifests and image must match it


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_all(path) if doc["kind"] == kind]


def ray_cluster() -> dict:
    (cluster,) = by_kind("RayCluster")
    return cluster


def pod_specs(cluster: dict) -> dict[str, dict]:
    spec = cluster["spec"]
    groups = {group["groupName"]: group["template"]["spec"] for group in spec["workerGroupSpecs"]}
    return {"head": spec["headGroupSpec"]["template"]["spec"], **groups}


def dockerfile_workdir() -> str:
    (workdir,) = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    return workdir


def test_raycluster_has_head_and_cpu_and_gpu_worker_groups():
    cluster = ray_cluster()
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["metadata"]["name"]
    spec = cluster["spec"]
    assert spec["rayVersion"] == RAY_VERSION and spec["enableInTreeAutoscaling"] is True
    assert (
        "rayStartParams" in spec["headGroupSpec"] and spec["headGroupSpec"]["template"]["spec"]["containers"]
    )
    groups = {group["groupName"]: group for group in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-shard", "gpu-train"}
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        assert "rayStartParams" in group
    assert groups["cpu-shard"]["maxReplicas"] > groups["cpu-shard"]["minReplicas"]  # autoscales


def test_every_container_requests_what_it_limits():
    for name, pod in pod_specs(ray_cluster()).items():
        for container in pod["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert resources["requests"] == resources["limits"], name  # Ray sizes itself from these


def test_gpu_group_asks_for_gpus_and_cpu_group_does_not():
    pods = pod_specs(ray_cluster())
    gpu = pods["gpu-train"]["containers"][0]
    assert int(gpu["resources"]["limits"]["nvidia.com/gpu"]) >= 1 and gpu["image"].endswith("-gpu")
    assert any(t["key"] == "nvidia.com/gpu" for t in pods["gpu-train"]["tolerations"])
    for name in ("head", "cpu-shard"):
        container = pods[name]["containers"][0]
        assert "nvidia.com/gpu" not in container["resources"]["limits"] and container["image"].endswith(
            "-cpu"
        )


def test_head_runs_no_tasks():
    assert ray_cluster()["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


@pytest.mark.parametrize("path", ["rayjob-shard.yaml", "rayjob-post-pretrain.yaml"])
def test_rayjob_submits_a_real_job_with_flags_it_accepts(path):
    (job,) = load_all(K8S / path)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["clusterSelector"]["ray.io/cluster"] == ray_cluster()["metadata"]["name"]
    assert spec["submissionMode"] in {"K8sJobMode", "HTTPMode"}
    assert spec["shutdownAfterJobFinishes"] is False  # the cluster is shared by both jobs
    yaml.safe_load(spec["runtimeEnvYAML"])
    python, script, *argv = shlex.split(spec["entrypoint"])
    assert python == "python" and script.startswith(dockerfile_workdir() + "/")
    relative = script.removeprefix(dockerfile_workdir() + "/")
    assert (REPO / relative).is_file() and relative in JOBS, script
    config_type, aliases = JOBS[relative]
    config = parse_config(config_type, argv, aliases=aliases)  # exits on a flag the job does not accept
    assert isinstance(config, config_type)


def test_training_job_fits_the_gpu_group():
    (job,) = load_all(K8S / "rayjob-post-pretrain.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])[2:]
    config = parse_config(PostPretrainConfig, argv, aliases=POST_PRETRAIN_ALIASES)
    gpu_group = next(g for g in ray_cluster()["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu-train")
    limits = gpu_group["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpus_per_pod, cpus_per_pod = int(limits["nvidia.com/gpu"]), int(limits["cpu"])
    assert config.workers.use_gpu and config.model.backbone == "ViT-B-32"
    assert config.workers.num_workers <= gpus_per_pod * gpu_group["maxReplicas"]
    assert config.workers.cpus_per_worker * gpus_per_pod <= cpus_per_pod  # 8 workers fit one pod
    assert config.data.loader_workers < config.workers.cpus_per_worker


def test_sharding_job_reads_the_mounted_source():
    (job,) = load_all(K8S / "rayjob-shard.yaml")
    config = parse_config(ShardingConfig, shlex.split(job["spec"]["entrypoint"])[2:])
    pods = pod_specs(ray_cluster())
    for name in ("head", "cpu-shard"):  # the driver plans from the metadata; the tasks read the videos
        mounts = [m["mountPath"] for c in pods[name]["containers"] for m in c.get("volumeMounts", [])]
        assert any(config.source.videos.startswith(mount + "/") for mount in mounts), name
    assert config.out.startswith("s3://") and config.selection.subset == "howto100m-380k"
    # enough tasks queued for the autoscaler to bring up every cpu-shard pod (the default bound is 2 x the
    # CPUs present when the driver starts)
    group = next(g for g in ray_cluster()["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu-shard")
    cores = int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert config.ray.max_in_flight >= group["maxReplicas"] * cores


def test_object_store_credentials_come_from_platform_mechanisms():
    for name, pod in pod_specs(ray_cluster()).items():
        assert pod["serviceAccountName"] == "clip4clip-ray", name  # cloud role (IRSA / Pod Identity)
        env_from = pod["containers"][0]["envFrom"]
        secrets = [e["secretRef"] for e in env_from if "secretRef" in e]
        assert secrets and all(s["optional"] for s in secrets), name  # static keys only if the Secret exists
        assert not pod["containers"][0].get("env"), name  # no literal environment, secret or not
    (account,) = by_kind("ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    (secret,) = by_kind("Secret")
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(value.startswith("REPLACE_WITH_") for value in secret["stringData"].values())  # a template
    (config_map,) = by_kind("ConfigMap")
    assert (
        "AWS_ENDPOINT_URL" in (K8S / "object-store.yaml").read_text() and "AWS_REGION" in config_map["data"]
    )


def test_no_secret_values_anywhere_in_infra():
    # AWS access key ids start with AKIA/ASIA; secret keys are 40 base64 characters
    for path in [*K8S.glob("*.yaml"), LAUNCHER, DOCKERFILE]:
        text = path.read_text()
        assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", text), path
        assert not re.search(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])", text), path


def test_launcher_yaml_passes_rays_validation():
    config = prepare_config(yaml.safe_load(LAUNCHER.read_text()))  # what `ray up` does before validating
    validate_config(config)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["cpu_shard"]["max_workers"] > types["cpu_shard"]["min_workers"] == 0
    assert types["gpu_train"]["resources"]["GPU"] >= 1
    assert types["gpu_train"]["docker"]["worker_image"].endswith("-gpu") and config["docker"][
        "image"
    ].endswith("-cpu")
    assert all("IamInstanceProfile" in t["node_config"] for t in types.values())


def test_launcher_validation_rejects_a_wrong_field():
    config = yaml.safe_load(LAUNCHER.read_text())
    config["available_node_types"]["gpu_train"]["min_worker"] = 1  # typo of min_workers
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(config))


def test_dockerfile_builds_both_variants_with_pinned_versions():
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    assert re.search(r"^FROM\s+\$\{BASE_IMAGE\}", text, flags=re.MULTILINE) and ":" in args["BASE_IMAGE"]
    assert args["TORCH_INDEX_URL"].endswith("/cpu") and "whl/cu12" in text  # CPU default, CUDA documented
    assert args["RAY_VERSION"] == RAY_VERSION and args["TORCH_VERSION"] == _constraint("torch")
    assert re.match(r"\d+\.\d+\.\d+$", args["TORCHVISION_VERSION"])
    assert re.search(r'"ray\[default,train\]==\$\{RAY_VERSION\}"', text)
    assert re.search(r'"open_clip_torch==\$\{OPEN_CLIP_VERSION\}"', text)
    assert re.search(r'"ffmpeg=\$\{FFMPEG_VERSION\}"', text) and "apt-get install" in text
    unpinned = [line for line in re.findall(r'^\s+"([^"$]+)"', text, flags=re.MULTILINE) if "==" not in line]
    assert not unpinned, unpinned
    assert re.search(r"^WORKDIR /app$", text, flags=re.MULTILINE) and re.search(r"pip install .*\s\.\s", text)
    for folder in ("pipelines", "model", "jobs"):
        assert re.search(rf"^COPY {folder} ", text, flags=re.MULTILINE), folder


def _constraint(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")
