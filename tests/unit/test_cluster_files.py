"""The files in ``cluster/``: ``ray up`` configs, KubeRay manifests, the Dockerfile and the commands
in ``cluster/README.md``, checked offline (nothing is launched, no Ray cluster is started).

What a user relies on: Ray accepts each ``ray up`` file; GPU workers are declared with the GPUs
their machines have and are started with the cluster (sslab sizes a run by what is there when it
starts); every node and pod mounts the shared file system at ``/shared`` and runs the one image
built from ``cluster/Dockerfile``, whose base matches the Ray and Python the project pins; and every
``sslab`` command these files tell a user to run parses and validates with sslab's own CLI, writes
under ``/shared`` and names a search space that exists.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
SHARED = "/shared"
RAY_UP = ["aws.yaml", "gcp.yaml", "onprem.yaml"]
CLOUDS = ["aws.yaml", "gcp.yaml"]  # the on-prem provider has no node types: Ray detects each host's GPUs
CLUSTER_SPECS = ["raycluster.yaml", "rayjob.yaml"]  # both hold a RayCluster spec


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def prepared(name: str) -> dict:
    """The config as ``ray up`` sees it: Ray's defaults merged in, node types filled out."""
    return prepare_config(copy.deepcopy(load(CLUSTER / name)))


def cluster_spec(name: str) -> dict:
    doc = load(KUBERAY / name)
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def shipped_specs():
    from sslab.search_spec import load_spec

    return [load_spec(path) for path in sorted((ROOT / "search_spaces").glob("*.yaml"))]


# ---------------------------------------------------------------- the Dockerfile and the image


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined: [(INSTRUCTION, arguments)]."""
    text = re.sub(r"\\\n", " ", (CLUSTER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def base_image() -> re.Match:
    froms = [args for instr, args in dockerfile() if instr == "FROM"]
    assert len(froms) == 1, f"one FROM expected, found {froms}"
    match = re.fullmatch(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d+)-(?P<accel>gpu|cu\d+)", froms[0])
    assert match, f"FROM {froms[0]}: expected an official rayproject/ray:<ray>-py<XY>-gpu (or -cuXY) image"
    return match


def the_image() -> str:
    """The image every node runs (aws.yaml's; the tests below hold the others to it)."""
    return load(CLUSTER / "aws.yaml")["docker"]["image"]


def test_the_dockerfile_builds_on_the_ray_and_python_the_project_pins():
    base = base_image()
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    assert base["ray"] == ray.__version__ == pins["ray"], "Dockerfile FROM, installed Ray, constraints.txt"
    # constraints.txt was resolved and tested on this interpreter (make install's .venv).
    assert base["py"] == f"{sys.version_info.major}{sys.version_info.minor}"


def test_the_dockerfile_installs_sslab_with_the_constraints_and_a_cuda_torch():
    steps = dockerfile()
    runs = [args for instr, args in steps if instr == "RUN"]
    pip = [cmd.strip() for run in runs for cmd in run.split("&&") if re.search(r"\bpip install\b", cmd)]
    sslab = [cmd for cmd in pip if re.search(r"""\s["']?\.(\[[\w,-]+\])?["']?$""", cmd)]
    assert len(sslab) == 1, f"one pip install of the repository ('.'), found {pip}"
    assert all("-c constraints.txt" in cmd for cmd in pip), "every pip install honours constraints.txt"
    extras = re.search(r"\.\[([\w,-]+)\]", sslab[0])
    optional = load_pyproject()["project"].get("optional-dependencies", {})
    assert not extras or set(extras[1].split(",")) <= set(optional), "extras that pyproject.toml defines"
    # constraints.txt was tested with torch's CPU build; the image needs the CUDA one.
    torch = [cmd for cmd in pip if re.search(r"\btorch\b", cmd)]
    assert torch and re.search(r"download\.pytorch\.org/whl/(cu\d+|\$\{?TORCH_CUDA\}?)", torch[0])
    assert pip.index(torch[0]) < pip.index(sslab[0]), "torch's CUDA build first, so the constrained install keeps it"
    assert any("torch.version.cuda" in run for run in runs), "the build fails on a CPU torch"
    # constraints.txt is in the image before the first pip install that reads it.
    first_pip = next(i for i, (instr, args) in enumerate(steps) if instr == "RUN" and "pip install" in args)
    copied = [[t for t in args.split() if not t.startswith("--")][:-1] for instr, args in steps[:first_pip]
              if instr == "COPY"]
    assert any("constraints.txt" in sources or "." in sources for sources in copied)


def load_pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_docker_build_context_leaves_out_the_local_venv_and_runs():
    # docker build -f cluster/Dockerfile reads cluster/Dockerfile.dockerignore: without it the
    # CPU torch of .venv/ and every local run would be copied into the image.
    patterns = {line.strip().strip("/") for line in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".venv", "runs", ".git"} <= patterns


def test_the_image_is_tagged_like_the_base_it_is_built_on():
    repo, _, tag = the_image().rpartition(":")
    assert repo.endswith("/sslab") and tag == base_image().string.split(":", 1)[1]


# ---------------------------------------------------------------- ray up files


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_file_validates_against_the_schema_ray_ships(name, ray_schema):
    jsonschema.validate(load(CLUSTER / name), ray_schema)


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_file_passes_rays_own_config_preparation(name):
    # What `ray up` does before it calls the cloud: merge the provider's defaults, check the node
    # types, the docker section and the worker counts. Offline: no credentials needed.
    validate_config(prepared(name))


def test_onprem_file_lists_its_hosts():
    provider = load(CLUSTER / "onprem.yaml")["provider"]
    assert provider["type"] == "local" and provider["head_ip"] and provider["worker_ips"]
    workers = prepared("onprem.yaml")["available_node_types"]["local.cluster.node"]
    assert workers["min_workers"] == workers["max_workers"] == len(provider["worker_ips"])


# GPUs per machine type, for the types these files use or suggest.
AWS_GPUS = {"g5.xlarge": 1, "g5.2xlarge": 1, "g5.4xlarge": 1, "g5.8xlarge": 1, "g5.12xlarge": 4, "g5.48xlarge": 8,
            "g6.xlarge": 1, "g6.2xlarge": 1, "g6.12xlarge": 4, "p4d.24xlarge": 8, "p4de.24xlarge": 8,
            "p5.48xlarge": 8}
GCP_G2_GPUS = {4: 1, 8: 1, 12: 1, 16: 1, 32: 1, 24: 2, 48: 4, 96: 8}


def machine_gpus(provider: str, node_config: dict) -> int:
    """The GPUs a machine of ``node_config`` has (the cloud attaches them, whatever Ray is told)."""
    if provider == "aws":
        kind = node_config["InstanceType"]
        if kind not in AWS_GPUS and kind.split(".")[0][0] in "gp":
            pytest.fail(f"{kind}: add its GPU count to AWS_GPUS")
        return AWS_GPUS.get(kind, 0)
    machine = node_config["machineType"]
    attached = sum(a["acceleratorCount"] for a in node_config.get("guestAccelerators", []))
    if m := re.fullmatch(r"a[234]-(?:high|ultra|mega)gpu-(\d+)g", machine):
        return attached + int(m[1])
    if m := re.fullmatch(r"g2-standard-(\d+)", machine):
        return attached + GCP_G2_GPUS[int(m[1])]
    return attached


def gpu_node_types(config: dict) -> dict:
    return {name: t for name, t in config["available_node_types"].items() if t["resources"].get("GPU", 0) > 0}


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_file_declares_gpu_workers_with_the_gpus_their_machines_have(name):
    config = prepared(name)
    provider = config["provider"]["type"]
    gpu_types = gpu_node_types(config)
    assert gpu_types and config["head_node_type"] not in gpu_types, "GPU worker types besides the head"
    for type_name, node_type in config["available_node_types"].items():
        assert node_type["resources"].get("GPU", 0) == machine_gpus(provider, node_type["node_config"]), type_name
    if provider == "gcp":  # Compute Engine refuses GPU VMs that would live-migrate
        for node_type in gpu_types.values():
            assert {"onHostMaintenance": "TERMINATE"} in node_type["node_config"].get("scheduling", [])


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_file_starts_its_gpu_workers_with_the_cluster(name):
    # sslab reads the cluster's GPUs when a run starts and does not wait for the autoscaler: GPU
    # workers that only the autoscaler would start would leave a search training on CPUs.
    config = prepared(name)
    gpu_types = gpu_node_types(config)
    assert all(1 <= t["min_workers"] <= t["max_workers"] for t in gpu_types.values())
    assert sum(t["min_workers"] for t in config["available_node_types"].values()) <= config["max_workers"]


def ray_up_nodes(config: dict) -> list[dict]:
    """Per node: its resources and how many start with the cluster (the head counts once)."""
    head = config["head_node_type"]
    return [dict(t["resources"], count=1 if name == head else t["min_workers"])
            for name, t in config["available_node_types"].items()]


@pytest.mark.parametrize("name", CLOUDS)
def test_every_shipped_space_runs_on_the_cloud_cluster_as_launched(name, monkeypatch):
    assert_spaces_fit(ray_up_nodes(prepared(name)), monkeypatch)


def assert_spaces_fit(nodes: list[dict], monkeypatch) -> None:
    """Every shipped search space has one trial at least running at once on ``nodes``, by sslab's
    own sizing, with each Train worker's CPUs and GPU on one node and on GPUs."""
    from sslab import capacity, search

    totals = {key: sum(n.get(key, 0) * n["count"] for n in nodes) for key in ("CPU", "GPU")}
    monkeypatch.setattr(ray, "cluster_resources", lambda: totals)
    kinds = [capacity.NodeKind({k: n.get(k, 0) for k in ("CPU", "GPU")}, n["count"]) for n in nodes]
    monkeypatch.setattr(capacity, "node_kinds", lambda: kinds)
    for spec in shipped_specs():
        assert search.concurrency(spec) >= 1, spec.name
        r = spec.resources
        gpus = r.gpus_per_worker if r.gpus_per_worker is not None else 1.0
        assert gpus > 0, f"{spec.name} would train on CPUs"
        assert any(n["count"] and n.get("CPU", 0) >= r.cpus_per_worker and n.get("GPU", 0) >= gpus
                   for n in nodes), f"no node holds one {spec.name} worker ({r.cpus_per_worker:g} CPUs + {gpus:g} GPU)"


def command_lists(config: dict) -> dict[str, list[str]]:
    """Every list of shell commands in a ray up config, the node types' own included."""
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    out = {key: config.get(key, []) for key in keys}
    for name, node_type in config.get("available_node_types", {}).items():
        out |= {f"{name}.{key}": node_type[key] for key in keys if key in node_type}
    return out


def host_init_commands(config: dict) -> dict[str, list[str]]:
    """The commands each node type runs on its host before Docker starts (a node type's own list
    replaces the global one)."""
    node_types = prepare_config(copy.deepcopy(config))["available_node_types"]
    return {name: t.get("initialization_commands", config.get("initialization_commands", []))
            for name, t in node_types.items()}


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_file_mounts_shared_storage_at_shared_on_every_node(name):
    config = load(CLUSTER / name)
    for node_type, commands in host_init_commands(config).items():
        mounts = [c for c in commands if re.search(r"\bmount -t nfs4?\b.*\s" + SHARED + r"$", c.strip())]
        assert mounts, f"{node_type}: no NFS mount at {SHARED} among the commands run on the host before Docker"
    # Then bound into the container at the same path, where sslab writes.
    options = " ".join(config["docker"].get("run_options", []))
    assert re.search(rf"(-v|--volume)[ =]{SHARED}:{SHARED}(\s|$)", options), "docker run_options"
    for node_type in config.get("available_node_types", {}).values():
        assert "worker_run_options" not in node_type.get("docker", {}) or \
            f"{SHARED}:{SHARED}" in " ".join(node_type["docker"]["worker_run_options"])


def test_every_ray_up_file_runs_the_one_image_and_installs_nothing_else():
    # One way to install sslab everywhere: the image built from cluster/Dockerfile. Nodes that
    # pip-install on top could drift from the head (Ray refuses mixed Ray or Python versions).
    for name in RAY_UP:
        config = load(CLUSTER / name)
        docker = config["docker"]
        assert docker["image"] == the_image(), name
        assert not {"head_image", "worker_image"} & set(docker), name
        assert all("worker_image" not in t.get("docker", {}) for t in config.get("available_node_types", {}).values())
        for key, commands in command_lists(config).items():
            installs = [c for c in commands if re.search(r"\b(pip3?|uv pip|conda|mamba) install\b", c)]
            assert not installs, f"{name} {key} installs software: {installs}"


# ---------------------------------------------------------------- KubeRay

RAYCLUSTER_KEYS = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions",
                   "headServiceAnnotations", "suspend", "gcsFaultToleranceOptions", "managedBy", "upgradeStrategy"}
HEAD_KEYS = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_KEYS = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams", "template",
               "scaleStrategy", "idleTimeoutSeconds", "suspend"}
RAYJOB_KEYS = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
               "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint", "runtimeEnvYAML",
               "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
               "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule"}


def pvc() -> dict:
    doc = load(KUBERAY / "pvc.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "PersistentVolumeClaim")
    return doc


def pod_specs(spec: dict) -> dict[str, dict]:
    return {"head": spec["headGroupSpec"]["template"]["spec"]} | \
        {f"worker group {g['groupName']}": g["template"]["spec"] for g in spec["workerGroupSpecs"]}


def test_kuberay_manifests_are_the_kinds_kuberay_v1_serves():
    assert {(d["apiVersion"], d["kind"]) for d in map(load, [KUBERAY / n for n in CLUSTER_SPECS])} == \
        {("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob")}
    assert set(load(KUBERAY / "rayjob.yaml")["spec"]) <= RAYJOB_KEYS


@pytest.mark.parametrize("name", CLUSTER_SPECS)
def test_ray_cluster_spec_has_only_fields_kuberay_knows(name):
    # The API server drops or refuses an unknown field: a typo would silently lose a setting.
    spec = cluster_spec(name)
    assert set(spec) <= RAYCLUSTER_KEYS and {"headGroupSpec", "workerGroupSpecs"} <= set(spec)
    assert set(spec["headGroupSpec"]) <= HEAD_KEYS
    assert all(set(group) <= WORKER_KEYS for group in spec["workerGroupSpecs"])
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        params = group["rayStartParams"]  # required by the CRD, and a map of strings
        assert all(isinstance(v, str) for v in params.values()), f"rayStartParams values must be strings: {params}"


@pytest.mark.parametrize("name", CLUSTER_SPECS)
def test_ray_cluster_spec_has_a_head_and_gpu_workers_started_with_it(name):
    spec = cluster_spec(name)
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    gpu_groups = [g for g in spec["workerGroupSpecs"] if container_gpus(g["template"]["spec"]) >= 1]
    assert gpu_groups, "a worker group with nvidia.com/gpu limits"
    assert len({g["groupName"] for g in spec["workerGroupSpecs"]}) == len(spec["workerGroupSpecs"])
    for group in gpu_groups:  # sslab sizes a run by the GPUs there when it starts
        assert 1 <= group["replicas"] and group.get("minReplicas", 0) <= group["replicas"] <= group["maxReplicas"]


def container_gpus(pod: dict) -> int:
    c = pod["containers"][0]["resources"]
    gpus = int(c.get("limits", {}).get("nvidia.com/gpu", 0))
    assert int(c.get("requests", {}).get("nvidia.com/gpu", gpus)) == gpus, "GPU requests equal limits"
    return gpus


def cpu_quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def kuberay_nodes(spec: dict) -> list[dict]:
    """Per pod kind: the CPUs and GPUs Ray advertises (rayStartParams, else the container's limits)."""
    def node(group, count):
        pod, params = group["template"]["spec"], group["rayStartParams"]
        limits = pod["containers"][0]["resources"].get("limits", {})
        cpus = float(params["num-cpus"]) if "num-cpus" in params else cpu_quantity(limits.get("cpu", 0))
        gpus = float(params["num-gpus"]) if "num-gpus" in params else container_gpus(pod)
        return {"CPU": cpus, "GPU": gpus, "count": count}

    return [node(spec["headGroupSpec"], 1)] + [node(g, g["replicas"]) for g in spec["workerGroupSpecs"]]


@pytest.mark.parametrize("name", CLUSTER_SPECS)
def test_every_shipped_space_runs_on_the_kuberay_cluster_as_launched(name, monkeypatch):
    assert_spaces_fit(kuberay_nodes(cluster_spec(name)), monkeypatch)


@pytest.mark.parametrize("name", CLUSTER_SPECS + ["results-pod.yaml"])
def test_every_pod_mounts_the_shared_volume_at_shared(name):
    claim = pvc()
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "every node writes the same run directories"
    doc = load(KUBERAY / name)
    pods = {"pod": doc["spec"]} if doc["kind"] == "Pod" else pod_specs(cluster_spec(name))
    for where, pod in pods.items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod.get("initContainers", []) + pod["containers"]:
            mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == SHARED]
            assert mounts, f"{where}: container {container['name']} does not mount {SHARED}"
            volume = volumes[mounts[0]["name"]]
            assert volume.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"], where


@pytest.mark.parametrize("name", CLUSTER_SPECS)
def test_every_ray_pod_runs_the_image_of_the_installed_ray(name):
    spec = cluster_spec(name)
    assert spec["rayVersion"] == ray.__version__
    for where, pod in pod_specs(spec).items():
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["image"] == the_image(), f"{where}: {container['name']}"


# ---------------------------------------------------------------- sslab commands


class Parsed(Exception):
    """Raised where sslab would start Ray: the command parsed and its config validated."""

    def __init__(self, command: str, out: str, target):
        super().__init__(command)
        self.command, self.out, self.target = command, out, target


def parse_sslab(argv: list[str], monkeypatch, capsys) -> Parsed:
    """Run ``sslab argv`` through the real ``sslab.cli.main``, with validation, up to the point
    where it would start Ray."""
    from sslab import cli, runner, search
    from sslab.search_spec import load_spec

    def tune(spec, *, out=None, resume=False, overrides=None):
        raise Parsed("tune", out, (spec, load_spec(spec, overrides)))

    def pretrain(cfg, *args, **kwargs):
        raise Parsed("pretrain", cfg.run.out, cfg)

    def no_ray(*args, **kwargs):
        raise AssertionError("sslab started Ray")

    monkeypatch.setattr(search, "tune", tune)
    monkeypatch.setattr(runner, "pretrain", pretrain)
    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.chdir(ROOT)  # `ray job submit --working-dir .` from the repository root
    try:
        code = cli.main(list(argv))
    except Parsed as parsed:
        return parsed
    except SystemExit as e:
        pytest.fail(f"sslab {shlex.join(argv)}: the command line is refused (exit {e.code}): "
                    f"{capsys.readouterr().err.strip()}")
    pytest.fail(f"sslab {shlex.join(argv)}: exit {code}: {capsys.readouterr().err.strip()}")


def assert_runs_on_shared_storage(argv: list[str], monkeypatch, capsys) -> Parsed:
    parsed = parse_sslab(argv, monkeypatch, capsys)
    assert parsed.out and Path(parsed.out).is_absolute() and Path(parsed.out).is_relative_to(SHARED), \
        f"sslab {shlex.join(argv)}: --out must be under {SHARED} (shared by every node), got {parsed.out!r}"
    if parsed.command == "tune":  # a shipped name or a file of the repository's search_spaces/
        spec = Path(parsed.target[0])
        assert (ROOT / "search_spaces" / f"{spec.stem}.yaml").is_file() and spec.suffix in ("", ".yaml")
    return parsed


def test_the_rayjob_entrypoint_is_a_valid_sslab_command_writing_to_shared(monkeypatch, capsys):
    job = load(KUBERAY / "rayjob.yaml")["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[0] == "sslab" and argv[1] in ("tune", "pretrain")
    assert_runs_on_shared_storage(argv[1:], monkeypatch, capsys)
    # The results must outlive the cluster KubeRay deletes when the job ends.
    assert job["shutdownAfterJobFinishes"] is True
    assert pod_specs(job["rayClusterSpec"])["head"]["volumes"]


def readme_commands() -> list[list[str]]:
    """The shell commands in cluster/README.md's code blocks, continuation lines joined, as argv."""
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", (CLUSTER / "README.md").read_text(), re.S)
    lines = [line for block in blocks for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.strip()]


def sslab_commands() -> list[list[str]]:
    """The argv of every ``sslab`` command in the README, wherever on its line (after ``--``)."""
    out = []
    for tokens in readme_commands():
        submit = tokens[:3] == ["ray", "job", "submit"]
        for i in [i for i, t in enumerate(tokens) if t == "sslab" and (i == 0 or submit or tokens[i - 1] == "--")]:
            rest = tokens[i + 1:]
            out.append(rest[:next((j for j, t in enumerate(rest) if t in ("&&", "||", ";", "|")), len(rest))])
    return out


def test_the_readme_shows_sslab_commands_and_submits_them_after_a_double_dash():
    commands = sslab_commands()
    assert len(commands) >= 4 and {"tune", "pretrain"} <= {c[0] for c in commands}
    # Without `--`, ray job submit would take sslab's --out for one of its own options.
    for tokens in readme_commands():
        if tokens[:3] == ["ray", "job", "submit"]:
            assert "--" in tokens and tokens[tokens.index("--") + 1] == "sslab", shlex.join(tokens)


@pytest.mark.parametrize("argv", sslab_commands(), ids=shlex.join)
def test_each_sslab_command_in_the_readme_parses_and_writes_to_shared(argv, monkeypatch, capsys):
    assert_runs_on_shared_storage(argv, monkeypatch, capsys)


def test_the_readme_names_only_files_that_exist():
    text = "\n".join(shlex.join(tokens) for tokens in readme_commands())
    named = set(re.findall(r"cluster/[\w./-]+\.(?:yaml|md)|cluster/Dockerfile", text))
    assert {"cluster/aws.yaml", "cluster/kuberay/rayjob.yaml", "cluster/Dockerfile"} <= named
    assert all((ROOT / path).is_file() for path in named), sorted(p for p in named if not (ROOT / p).is_file())
