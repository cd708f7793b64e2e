"""The trainer image and the training jobs (Dockerfile, serving/deploy/train-*.yaml), checked statically.

The Dockerfile is read by a small parser of its instructions; the Kubernetes documents are validated against
the API's schemas (kubernetes-validate, strict: an unknown field fails) and the Vertex AI job against its
CustomJobSpec proto; then the files are checked against each other, kcnn's CLI and its configs.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shlex
import sys
from typing import NamedTuple

import kubernetes_validate
import pytest
from google.cloud.aiplatform_v1.types import custom_job
from google.protobuf import json_format
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import kcnn
from kcnn.cli import build_parser
from pipelines import config as C
from serving import config as sc
from serving import deploy_manifests as dm

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUBERNETES_VERSION = "1.31"  # podFailurePolicy is GA from 1.31; the manifests' header says >= 1.31


def read(path: str) -> str:
    with open(os.path.join(REPO, path)) as handle:
        return handle.read()


# --- the Dockerfile, parsed ---------------------------------------------------------------------------------

class Instruction(NamedTuple):
    keyword: str
    value: str  # continuation lines joined, whitespace collapsed
    line: int

    @property
    def exec_form(self) -> list | None:
        """The JSON-array form (``["kcnn", "train"]``), or None for the shell form."""
        return json.loads(self.value) if self.value.startswith("[") else None


class Stage(NamedTuple):
    name: str
    base: str
    instructions: list


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their line continuations joined; comments (also inside continuations) dropped."""
    instructions, pending, start = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        start = start or number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        keyword, _, value = " ".join([*pending, stripped]).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(value.split()), start))
        pending, start = [], None
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> tuple[dict, list[Stage]]:
    """The global ARGs (before the first FROM, with their defaults) and the stages in order."""
    global_args, found = {}, []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            base, *alias = instruction.value.split()
            assert len(alias) == 2 and alias[0].upper() == "AS", f"line {instruction.line}: every stage is named"
            found.append(Stage(alias[1], base, []))
        elif not found:
            assert instruction.keyword == "ARG", f"line {instruction.line}: only ARG may come before the first FROM"
            name, _, default = instruction.value.partition("=")
            global_args[name] = default
        else:
            found[-1].instructions.append(instruction)
    return global_args, found


def stage_args(stage: Stage, global_args: dict) -> dict:
    """The ARGs a stage sees: the ones it declares, a bare ``ARG NAME`` taking the global default."""
    values = {}
    for instruction in stage.instructions:
        if instruction.keyword == "ARG":
            name, sep, default = instruction.value.partition("=")
            values[name] = default if sep else global_args.get(name, "")
    return values


def expand(text: str, values: dict) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], text)


def copy_sources(instruction: Instruction) -> list[str]:
    words = instruction.exec_form or shlex.split(instruction.value)
    return [word for word in words if not word.startswith("--")][:-1]


def dockerignore_keeps(path: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether the build context holds ``path``: Docker's rule that the last pattern matching the path or one
    of its parent directories decides, ``!`` re-including."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    kept = True
    for negated, pattern in patterns:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            kept = negated
    return kept


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, line = line.startswith("!"), line.lstrip("!").strip("/")
        regex = re.escape(line).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*") \
            .replace(r"\?", "[^/]")
        patterns.append((negated, re.compile(regex)))
    return patterns


@pytest.fixture(scope="module")
def dockerfile():
    text = read("Dockerfile")
    global_args, found = stages(parse_dockerfile(text))
    return {"text": text, "args": global_args, "stages": {stage.name: stage for stage in found},
            "order": [stage.name for stage in found]}


@pytest.fixture(scope="module")
def pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)


def test_dockerfile_is_a_trainer_stage_then_the_serving_stage_last(dockerfile):
    assert dockerfile["order"] == ["trainer", "serving"]  # the last stage is what a plain `docker build` builds
    assert dockerfile["args"] == {"TF_SERVING_VERSION": sc.TF_SERVING_VERSION, "VARIANT": "", "PYTHON_VERSION": "3.12"}
    assert dockerfile["stages"]["serving"].base == "tensorflow/serving:${TF_SERVING_VERSION}${VARIANT}"
    for command in ("docker build -t kcnn-digits .", "docker build --build-arg VARIANT=-gpu -t kcnn-digits:gpu .",
                    "docker build --target trainer -t kcnn-trainer .",
                    "docker build --target trainer --build-arg VARIANT=-gpu -t kcnn-trainer:gpu ."):
        assert f"#   {command} " in dockerfile["text"]


def test_serving_stage_does_what_it_did(dockerfile):
    serving = dockerfile["stages"]["serving"].instructions
    assert [(i.keyword, i.exec_form or i.value) for i in serving] == [
        ("ARG", "MODEL_NAME=digits"),
        ("ENV", "MODEL_NAME=${MODEL_NAME} MODEL_BASE_PATH=/models"),
        ("COPY", "models/${MODEL_NAME} /models/${MODEL_NAME}"),
        ("COPY", "serving/docker/models.config serving/docker/batching.config serving/docker/monitoring.config "
                 "/config/"),
        ("EXPOSE", f"{sc.GRPC_PORT} {sc.REST_PORT}"),
        ("CMD", ["--model_config_file=/config/models.config", "--model_config_file_poll_wait_seconds=60",
                 "--enable_batching=true", "--batching_parameters_file=/config/batching.config",
                 "--monitoring_config_file=/config/monitoring.config", "--enable_model_warmup=true"]),
    ]


def test_trainer_stage_installs_kcnn_and_runs_kcnn_train_as_a_user(dockerfile, pyproject):
    trainer = dockerfile["stages"]["trainer"]
    assert trainer.base == "python:${PYTHON_VERSION}-slim"
    assert Version(dockerfile["args"]["PYTHON_VERSION"]) in SpecifierSet(pyproject["project"]["requires-python"])
    by_keyword = {}
    for instruction in trainer.instructions:
        by_keyword.setdefault(instruction.keyword, []).append(instruction)
    (entrypoint,) = by_keyword["ENTRYPOINT"]
    assert entrypoint.exec_form == list(dm.TRAINER_ENTRYPOINT) == ["kcnn", "train"]
    assert pyproject["project"]["scripts"]["kcnn"] == "kcnn.cli:main"
    (workdir,) = by_keyword["WORKDIR"]
    assert os.path.isabs(workdir.value)
    (user,) = by_keyword["USER"]
    assert user.value not in ("root", "0") and user.line > max(run.line for run in by_keyword["RUN"])
    (install,) = by_keyword["RUN"]
    assert install.value.startswith('pip install --no-cache-dir ".${VARIANT:+[gpu]}"')
    assert f"useradd --create-home --uid 1000 {user.value}" in install.value
    assert "VARIANT" in stage_args(trainer, dockerfile["args"])
    # The gpu extra is TensorFlow with CUDA, at the same versions as the plain dependency.
    (tensorflow,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("tensorflow>")]
    gpu = tensorflow.replace("tensorflow", "tensorflow[and-cuda]")
    assert pyproject["project"]["optional-dependencies"]["gpu"] == [gpu]
    # What `pip install .` needs, and the config the job manifests name relative to WORKDIR.
    sources = {source for i in by_keyword["COPY"] for source in copy_sources(i)}
    assert sources == {"pyproject.toml", "README.md", "kcnn/", "pipelines/", "serving/"}
    assert set(pyproject["tool"]["setuptools"]["packages"]["find"]["include"]) == {"kcnn*", "pipelines*", "serving*"}


def test_every_copy_source_exists_and_is_in_the_build_context(dockerfile):
    patterns = dockerignore_patterns(read(".dockerignore"))
    for name, stage in dockerfile["stages"].items():
        values = stage_args(stage, dockerfile["args"])
        for instruction in stage.instructions:
            if instruction.keyword != "COPY":
                continue
            for source in copy_sources(instruction):
                source = expand(source, values).rstrip("/")
                assert dockerignore_keeps(source, patterns), f"{name}: .dockerignore leaves out {source}"
                if source == "models/digits":  # made by `kcnn export`, as the header says, before `docker build`
                    assert "kcnn export runs/digits --base-path models/digits" in dockerfile["text"]
                    assert dockerignore_keeps("models/digits/1/saved_model.pb", patterns)
                    continue
                assert os.path.exists(os.path.join(REPO, source)), f"{name}: COPY {source} does not exist"
                for root, dirs, files in os.walk(os.path.join(REPO, source)):
                    dirs[:] = [d for d in dirs if d != "__pycache__"]
                    for file in files:
                        path = os.path.relpath(os.path.join(root, file), REPO)
                        assert dockerignore_keeps(path, patterns) != file.endswith(".pyc"), path
    for left_out in ("runs/digits/config.yaml", ".venv/bin/python", "tests/conftest.py", "kcnn.egg-info/PKG-INFO",
                     "kcnn/__pycache__/cli.cpython-312.pyc", "docs/config.md", ".git/HEAD"):
        assert not dockerignore_keeps(left_out, patterns), left_out


def test_dockerignore_reading_follows_dockers_rules():
    patterns = dockerignore_patterns("*\n!kcnn/\n**/__pycache__\n!kcnn/__pycache__/keep.pyc\ndocs/*.md\n")
    assert dockerignore_keeps("kcnn/cli.py", patterns) and not dockerignore_keeps("README.md", patterns)
    assert not dockerignore_keeps("kcnn/blocks/__pycache__/a.pyc", patterns)
    assert dockerignore_keeps("kcnn/__pycache__/keep.pyc", patterns)


# --- the Kubernetes Job -------------------------------------------------------------------------------------

def trainer_image(dockerfile_text: str) -> str:
    """The registry path the Dockerfile's header pushes the trainer image to."""
    (image,) = re.findall(r"^#\s+docker push (\S+)$", dockerfile_text, re.M)
    return image


@pytest.fixture(scope="module")
def gke():
    return dm.gke_documents()


@pytest.mark.parametrize("path", ["serving/deploy/train-gke.yaml", "serving/deploy/gke.yaml"])
def test_kubernetes_manifests_are_valid_for_the_api_with_no_unknown_fields(path):
    documents = dm.load_documents(os.path.join(REPO, path))
    assert documents
    for document in documents:
        assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_the_kubernetes_check_fails_on_a_misspelt_field(gke):
    job = copy.deepcopy(gke["Job"])
    job["spec"]["podFailurePolicy"]["rules"][0]["onPodCondition"] = job["spec"]["podFailurePolicy"]["rules"][0] \
        .pop("onPodConditions")
    with pytest.raises(kubernetes_validate.ValidationError, match="onPodCondition"):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def preemption_exit_code() -> int:
    """pipelines.preemption.EXIT_CODE, read without importing TensorFlow."""
    for node in ast.parse(read("pipelines/preemption.py")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["EXIT_CODE"]:
            return ast.literal_eval(node.value)
    raise AssertionError("pipelines/preemption.py has no EXIT_CODE")


def test_job_is_indexed_and_its_failure_policy_ignores_preemption(gke):
    assert set(gke) == {"ServiceAccount", "Service", "Job"}
    spec = gke["Job"]["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    assert pod["restartPolicy"] == "Never" and spec["backoffLimit"] >= 1
    assert preemption_exit_code() == 42
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Ignore", "onExitCodes": {"containerName": container["name"], "operator": "In",
                                             "values": [preemption_exit_code()]}},
    ]
    assert pod["terminationGracePeriodSeconds"] >= 30  # Kubernetes' default; the checkpoint needs its time
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["serviceAccountName"] == gke["ServiceAccount"]["metadata"]["name"]


def test_each_pod_gets_the_tf_config_of_its_index_and_the_service_resolves_the_hosts(gke):
    job, service = gke["Job"], gke["Service"]
    pod = job["spec"]["template"]["spec"]
    (port,) = [p["port"] for p in service["spec"]["ports"]]
    assert service["spec"]["clusterIP"] == "None" and service["metadata"]["name"] == pod["subdomain"]
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert [p["containerPort"] for p in dm.gke_container(job)["ports"]] == [port]
    # An indexed Job's pod i has hostname <job name>-<i>; with the subdomain that is its DNS name.
    hosts = [f"{job['metadata']['name']}-{i}.{pod['subdomain']}:{port}" for i in range(job["spec"]["completions"])]
    assert hosts == ["kcnn-train-0.kcnn-train:2222", "kcnn-train-1.kcnn-train:2222"]
    for index in range(job["spec"]["completions"]):
        expected = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        assert dm.gke_tf_config(index, job) == expected


def test_the_job_and_the_vertex_pools_run_the_same_valid_kcnn_train(gke, dockerfile):
    vertex = dm.vertex_spec()
    image = trainer_image(dockerfile["text"])
    assert re.fullmatch(r"\S+/kcnn-trainer:\d+\.\d+\.\d+", image)  # docker build --target trainer -t kcnn-trainer
    assert image.rsplit(":", 1)[1] == kcnn.__version__
    assert dm.gke_container(gke["Job"])["image"] == image
    readme = read("README.md")
    assert "docker build --target trainer -t kcnn-trainer ." in readme and f"docker push {image}\n" in readme
    assert [pool["containerSpec"]["imageUri"] for pool in vertex["workerPoolSpecs"]] == [image, image]
    argvs = [dm.gke_train_argv(gke["Job"])] + [dm.vertex_train_argv(vertex, pool) for pool in (0, 1)]
    assert argvs[0] == argvs[1] == argvs[2]
    args = build_parser().parse_args(argvs[0])  # kcnn's own parser: the options exist
    assert args.command == "train" and args.run_dir == "gs://BUCKET/runs/digits"
    assert os.path.isfile(os.path.join(REPO, args.config))
    config = C.load(os.path.join(REPO, args.config), args.set)  # every --set key and value is valid
    assert config.train.strategy == "multi_worker"


# --- the Vertex AI job --------------------------------------------------------------------------------------

def rest_field_names(value, descriptor, where: str) -> list[str]:
    """The keys of ``value`` that are not the REST API's (camelCase) name of a field; ParseDict takes both."""
    if not isinstance(value, dict) or descriptor is None or descriptor.full_name.startswith("google.protobuf."):
        return []
    fields = {field.json_name: field for field in descriptor.fields}
    wrong = [f"{where}.{key}" for key in value if key not in fields]
    for key, item in value.items():
        if key in fields:
            field = fields[key]
            for element in item if field.is_repeated else [item]:
                wrong += rest_field_names(element, field.message_type, f"{where}.{key}")
    return wrong


def parse_custom_job_spec(spec: dict):
    message = custom_job.CustomJobSpec.pb()()
    json_format.ParseDict(spec, message, ignore_unknown_fields=False)
    return message


def test_vertex_job_is_a_custom_job_spec_with_rest_field_names():
    spec = dm.vertex_spec()
    message = parse_custom_job_spec(spec)
    assert rest_field_names(spec, message.DESCRIPTOR, "CustomJobSpec") == []
    chief, workers = message.worker_pool_specs
    assert chief.replica_count == 1 and workers.replica_count >= 1
    assert chief.container_spec == workers.container_spec and not chief.container_spec.command  # the entrypoint
    assert message.scheduling.restart_job_on_worker_restart
    assert message.base_output_directory.output_uri_prefix.startswith("gs://")
    # The commented-out strategy is a value the API has.
    assert re.search(r"^  # strategy: SPOT\b", read("serving/deploy/train-vertex.yaml"), re.M)
    spot = copy.deepcopy(spec)
    spot["scheduling"]["strategy"] = "SPOT"
    assert parse_custom_job_spec(spot).scheduling.strategy == custom_job.Scheduling.Strategy.SPOT


@pytest.mark.parametrize("where, key", [("scheduling", "restartJobOnWorkerRestarts"), (None, "workerPools")])
def test_the_vertex_check_fails_on_a_misspelt_field(where, key):
    spec = dm.vertex_spec()
    (spec[where] if where else spec)[key] = 1
    with pytest.raises(json_format.ParseError, match=key):
        parse_custom_job_spec(spec)
    snake = dm.vertex_spec()
    snake["worker_pool_specs"] = snake.pop("workerPoolSpecs")
    assert parse_custom_job_spec(snake).worker_pool_specs  # protobuf takes it; gcloud's REST names do not
    assert rest_field_names(snake, custom_job.CustomJobSpec.pb().DESCRIPTOR, "CustomJobSpec") == \
        ["CustomJobSpec.worker_pool_specs"]


def test_vertex_tf_config_names_the_chief_and_the_workers():
    spec = dm.vertex_spec()
    cluster = {"chief": ["workerpool0-0:2222"], "worker": ["workerpool1-0:2222"]}
    assert dm.vertex_tf_config(0, 0, spec) == {"cluster": cluster, "task": {"type": "chief", "index": 0},
                                               "environment": "cloud"}
    assert dm.vertex_tf_config(1, 0, spec)["task"] == {"type": "worker", "index": 0}
    more = copy.deepcopy(spec)
    more["workerPoolSpecs"][1]["replicaCount"] = 3
    assert dm.vertex_tf_config(1, 2, more)["cluster"]["worker"] == [f"workerpool1-{i}:2222" for i in range(3)]
    with pytest.raises(ValueError, match="no replica 1 in worker pool 0"):
        dm.vertex_tf_config(0, 1, spec)
    local = {"workerpool0-0:2222": "localhost:23456", "workerpool1-0:2222": "localhost:23457"}
    assert dm.vertex_tf_config(1, 0, spec, addresses=local)["cluster"] == {"chief": ["localhost:23456"],
                                                                          "worker": ["localhost:23457"]}


# --- the helpers another process starts local workers with ---------------------------------------------------

def test_helpers_readdress_hosts_and_replace_the_run_dir(gke):
    hosts = dm.cluster_hosts(dm.gke_tf_config(0))
    local = dict(zip(hosts, ["localhost:23456", "localhost:23457"]))
    assert dm.gke_tf_config(1, addresses=local) == {"cluster": {"worker": ["localhost:23456", "localhost:23457"]},
                                                    "task": {"type": "worker", "index": 1}}
    with pytest.raises(ValueError, match="hosts the cluster does not have"):
        dm.gke_tf_config(0, addresses={"kcnn-train-2.kcnn-train:2222": "localhost:1"})
    with pytest.raises(ValueError, match="outside the Job's 0..1"):
        dm.gke_tf_config(2)
    argv = dm.gke_train_argv(run_dir="runs/local")
    assert argv == ["train", "pipelines/configs/digits.yaml", "--run-dir", "runs/local",
                    "--set", "train.strategy=multi_worker"]
    assert dm._with_run_dir(["train", "c.yaml", "--run-dir=gs://b/r"], "x") == ["train", "c.yaml", "--run-dir", "x"]
    assert dm._with_run_dir(["train", "c.yaml"], "x") == ["train", "c.yaml", "--run-dir", "x"]
    broken = copy.deepcopy(gke["Job"])
    dm.gke_container(broken)["command"] = ["kcnn", "train"]
    with pytest.raises(ValueError, match=r"expected \['sh', '-c', SCRIPT\]"):
        dm.gke_script(broken)
