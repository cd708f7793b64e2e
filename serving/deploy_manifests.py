"""The training jobs of ``serving/deploy/`` read back: their documents, kcnn's argv and each task's TF_CONFIG.

``train-gke.yaml`` is a Kubernetes indexed Job whose pods build their TF_CONFIG in a ``sh -c`` script from
``$JOB_COMPLETION_INDEX``; :func:`gke_tf_config` runs that script's part before ``exec`` with ``sh``, so what
it returns is what pod *i* gets. ``train-vertex.yaml`` is a Vertex AI CustomJobSpec; Vertex writes TF_CONFIG
itself (pool 0 the chief, pool 1 the workers), and :func:`vertex_tf_config` writes it the same way.
``addresses`` maps the manifests' host names to others, e.g. local ports for workers on one machine::

    hosts = cluster_hosts(gke_tf_config(0))
    local = {host: f"localhost:{port}" for host, port in zip(hosts, (23456, 23457))}
    env = {"TF_CONFIG": json.dumps(gke_tf_config(1, addresses=local))}
    argv = gke_train_argv(run_dir="runs/two-workers")   # kcnn.cli.main(argv), or ["kcnn", *argv]

No TensorFlow here: YAML, JSON and a shell.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from typing import Mapping

import yaml

DEPLOY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deploy")
GKE_TRAIN = os.path.join(DEPLOY_DIR, "train-gke.yaml")
VERTEX_TRAIN = os.path.join(DEPLOY_DIR, "train-vertex.yaml")
TRAINER_ENTRYPOINT = ("kcnn", "train")  # the Dockerfile trainer stage's ENTRYPOINT: Vertex's args follow it
VERTEX_TASK_TYPES = ("chief", "worker", "ps", "evaluator")  # Vertex's task type of worker pools 0, 1, 2, 3
VERTEX_PORT = 2222  # the port of every host in the cluster spec Vertex writes


def load_documents(path: str) -> list[dict]:
    """Every YAML document of a manifest (empty ones dropped)."""
    with open(path) as handle:
        return [document for document in yaml.safe_load_all(handle) if document is not None]


def gke_documents(path: str = GKE_TRAIN) -> dict[str, dict]:
    """The training manifest's documents by kind (Job, Service, ServiceAccount); each kind once."""
    documents = {}
    for document in load_documents(path):
        if document["kind"] in documents:
            raise ValueError(f"{path}: two {document['kind']} documents; expected one of each kind")
        documents[document["kind"]] = document
    return documents


def gke_container(job: dict | None = None) -> dict:
    """The Job's one container."""
    job = job or gke_documents()["Job"]
    containers = job["spec"]["template"]["spec"]["containers"]
    if len(containers) != 1:
        raise ValueError(f"the training Job has {len(containers)} containers; expected one")
    return containers[0]


def gke_script(job: dict | None = None) -> str:
    """The container's ``sh -c`` script (its command and args together must be ``sh -c SCRIPT``)."""
    container = gke_container(job)
    argv = [*container.get("command", []), *container.get("args", [])]
    if len(argv) != 3 or argv[:2] != ["sh", "-c"]:
        raise ValueError(f"the training container runs {argv!r}; expected ['sh', '-c', SCRIPT]")
    return argv[2]


def _split_exec(script: str) -> tuple[str, list[str]]:
    """The script before its ``exec`` line, and the command that line runs."""
    lines = script.splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith("exec "):
            return "\n".join(lines[:number]), shlex.split(line)[1:]
    raise ValueError("the training container's script has no `exec kcnn train ...` line")


def gke_tf_config(index: int, job: dict | None = None, addresses: Mapping[str, str] | None = None) -> dict:
    """The TF_CONFIG the pod with completion index ``index`` gets: the script's part before ``exec``, run by sh."""
    job = job or gke_documents()["Job"]
    completions = job["spec"]["completions"]
    if not 0 <= index < completions:
        raise ValueError(f"completion index {index} is outside the Job's 0..{completions - 1}")
    prefix, _ = _split_exec(gke_script(job))
    env = {"PATH": os.environ.get("PATH", os.defpath), "JOB_COMPLETION_INDEX": str(index)}
    env.update({var["name"]: var["value"] for var in gke_container(job).get("env", []) if "value" in var})
    result = subprocess.run(["sh", "-c", prefix + '\nprintf "%s" "$TF_CONFIG"'], env=env, capture_output=True,
                            text=True, timeout=10, check=True)
    try:
        tf_config = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise ValueError(f"pod {index}'s TF_CONFIG is not JSON ({error}): {result.stdout!r}") from None
    return _readdressed(tf_config, addresses)


def gke_train_argv(job: dict | None = None, run_dir: str | None = None) -> list[str]:
    """kcnn's argv in the Job's ``exec kcnn ...`` line (``["train", CONFIG, ...]``), --run-dir replaced if given."""
    _, command = _split_exec(gke_script(job))
    if command[:1] != ["kcnn"]:
        raise ValueError(f"the training container execs {command!r}; expected kcnn")
    return _with_run_dir(command[1:], run_dir)


def vertex_spec(path: str = VERTEX_TRAIN) -> dict:
    """The Vertex AI CustomJobSpec (REST field names)."""
    (spec,) = load_documents(path)
    return spec


def vertex_train_argv(spec: dict | None = None, pool: int = 0, run_dir: str | None = None) -> list[str]:
    """kcnn's argv in a pool's container: the image's entrypoint (or the pool's command) and its args."""
    container = (spec or vertex_spec())["workerPoolSpecs"][pool]["containerSpec"]
    command = [*(container.get("command") or TRAINER_ENTRYPOINT), *container.get("args", [])]
    if command[:1] != ["kcnn"]:
        raise ValueError(f"pool {pool} runs {command!r}; expected kcnn")
    return _with_run_dir(command[1:], run_dir)


def vertex_tf_config(pool: int, replica: int, spec: dict | None = None,
                     addresses: Mapping[str, str] | None = None) -> dict:
    """The TF_CONFIG Vertex AI gives replica ``replica`` of worker pool ``pool``.

    Hosts are named ``workerpool<pool>-<replica>:2222`` (Vertex's carry a job-specific prefix as well); its
    ``job`` and ``trial`` entries, which tf.distribute does not read, are left out.
    """
    pools = (spec or vertex_spec())["workerPoolSpecs"]
    cluster = {}
    for number, pool_spec in enumerate(pools):
        replicas = int(pool_spec.get("replicaCount", 0)) if pool_spec else 0  # {}: a pool left empty
        if replicas:
            cluster[VERTEX_TASK_TYPES[number]] = [f"workerpool{number}-{i}:{VERTEX_PORT}" for i in range(replicas)]
    task_type = VERTEX_TASK_TYPES[pool] if pool < len(VERTEX_TASK_TYPES) else None
    if task_type not in cluster or not 0 <= replica < len(cluster[task_type]):
        raise ValueError(f"the job has no replica {replica} in worker pool {pool}")
    tf_config = {"cluster": cluster, "task": {"type": task_type, "index": replica}, "environment": "cloud"}
    return _readdressed(tf_config, addresses)


def cluster_hosts(tf_config: dict) -> list[str]:
    """Every host of a TF_CONFIG's cluster, in its order (a Vertex cluster's chief first)."""
    return [host for hosts in tf_config["cluster"].values() for host in hosts]


def _readdressed(tf_config: dict, addresses: Mapping[str, str] | None) -> dict:
    if not addresses:
        return tf_config
    unknown = set(addresses) - set(cluster_hosts(tf_config))
    if unknown:
        raise ValueError(f"addresses for hosts the cluster does not have: {sorted(unknown)}; "
                         f"its hosts are {cluster_hosts(tf_config)}")
    cluster = {kind: [addresses.get(host, host) for host in hosts] for kind, hosts in tf_config["cluster"].items()}
    return {**tf_config, "cluster": cluster}


def _with_run_dir(argv: list[str], run_dir: str | None) -> list[str]:
    if run_dir is None:
        return list(argv)
    if "--run-dir" in argv:
        at = argv.index("--run-dir")
        return [*argv[:at], "--run-dir", run_dir, *argv[at + 2:]]
    return [arg for arg in argv if not arg.startswith("--run-dir=")] + ["--run-dir", run_dir]
