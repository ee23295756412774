"""Training on several nodes: a Kubeflow Trainer v2 `TrainJob`, launched and followed by the task.

A KFP task is one pod. With `train_nodes` above 1 the train task instead:
1. stages its sequences under the checkpoint folder (object storage every node can read);
2. creates a TrainJob on the `torch-distributed` runtime: `train_nodes` pods of the train
   image, each running `sasrec train-node`, which starts torchrun with the rendezvous the
   Trainer passes in PET_* variables;
3. streams the first node's log, waits for the TrainJob to complete or fail, and deletes it
   (with its pods) in every case;
4. fetches the model that the node of rank 0 wrote, and removes what it staged, by name.

Needs Kubeflow Trainer v2.0 or later (`trainer.kubeflow.org/v1alpha1`, the
`torch-distributed` ClusterTrainingRuntime) and the RBAC in deploy/trainjob-rbac.yaml.
"""

import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sasrec import storage
from sasrec.credentials import MLFLOW_CREDENTIALS, STORAGE_CREDENTIALS
from sasrec.errors import SASRecError
from sasrec.filenames import TRAINING_FILE
from sasrec.io import read_json

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime Kubeflow Trainer ships for torchrun
# Labels JobSet and Job put on a TrainJob's pods: the first node's pod is index 0.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
NODE_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
STAGED_SEQUENCES, STAGED_MODEL = "nodes-sequences", "nodes-model"  # under the checkpoint folder
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class NodeResources:
    """What each node's pod requests (and is limited to)."""

    cpu: str
    memory: str
    gpus: int = 0
    gpu_type: str = "nvidia.com/gpu"

    def as_requirements(self) -> dict[str, dict[str, Any]]:
        """A Kubernetes ResourceRequirements object, requests equal to limits."""
        amounts: dict[str, Any] = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus:
            amounts[self.gpu_type] = self.gpus
        return {"requests": amounts, "limits": dict(amounts)}


@dataclass(frozen=True)
class TrainJobRequest:
    """A TrainJob to create: where, which image, how many nodes, what each node runs."""

    name: str
    namespace: str
    image: str
    nodes: int
    processes_per_node: int
    args: list[str]  # of `python -m sasrec.cli`
    resources: NodeResources
    env: list[dict[str, Any]] = field(default_factory=list)
    runtime: str = RUNTIME


@dataclass(frozen=True)
class NodesRequest:
    """What the pipeline asks of a multi-node training: nodes, image, resources, secrets."""

    nodes: int
    image: str
    resources: NodeResources
    mlflow_secret: str = ""
    storage_secret: str = ""
    tracking_uri: str = ""
    namespace: str = ""  # "" : this pod's namespace

    def request(self, pipeline_run_id: str, trial: int, processes_per_node: int) -> TrainJobRequest:
        """The TrainJob of one training (its args are set by the caller)."""
        env = (
            [{"name": "MLFLOW_TRACKING_URI", "value": self.tracking_uri}]
            if self.tracking_uri
            else []
        )
        for secret, keys in (
            (self.mlflow_secret, MLFLOW_CREDENTIALS),
            (self.storage_secret, STORAGE_CREDENTIALS),
        ):
            env += secret_env(secret, keys) if secret else []
        return TrainJobRequest(
            name=trainjob_name(pipeline_run_id, trial),
            namespace=self.namespace or current_namespace(),
            image=self.image, nodes=self.nodes, processes_per_node=processes_per_node,
            args=[], resources=self.resources, env=env,
        )  # fmt: skip


def trainjob_name(pipeline_run_id: str, trial: int) -> str:
    """A TrainJob name of the pipeline run and trial: an RFC 1035 label, as the CRD asks."""
    run = re.sub(r"[^a-z0-9]", "", pipeline_run_id.lower())[:40] or "local"
    return f"sasrec-{run}-t{trial}"


def secret_env(secret: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Variables read from a Kubernetes secret, each optional as in the KFP tasks."""
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
        for key in keys
    ]


def trainjob_manifest(request: TrainJobRequest) -> dict[str, Any]:
    """The TrainJob object of `request` (trainer.kubeflow.org/v1alpha1)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "name": request.name,
            "namespace": request.namespace,
            "labels": {"app.kubernetes.io/part-of": "sasrec"},
        },
        "spec": {
            "runtimeRef": {
                "name": request.runtime,
                "apiGroup": GROUP,
                "kind": "ClusterTrainingRuntime",
            },
            "trainer": {
                "image": request.image,
                "command": ["python", "-m", "sasrec.cli"],
                "args": request.args,
                "env": request.env,
                "numNodes": request.nodes,
                "numProcPerNode": request.processes_per_node,
                "resourcesPerNode": request.resources.as_requirements(),
            },
        },
    }


def _outcome(trainjob: dict[str, Any]) -> tuple[str, str] | None:
    """("Complete" or "Failed", its message) once the TrainJob has ended, else None."""
    for condition in trainjob.get("status", {}).get("conditions", []):
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"], condition.get("message", "")
    return None


class _LogFollower:
    """Streams the first node's log to this process's log, once its pod has started."""

    def __init__(self, core: Any, namespace: str, name: str) -> None:
        self.core, self.namespace, self.name = core, namespace, name
        self.thread: threading.Thread | None = None

    def poll(self) -> None:
        """Start following when the first node's pod runs (or already ended)."""
        if self.thread is not None:
            return
        selector = f"{JOBSET_NAME_LABEL}={self.name},{NODE_INDEX_LABEL}=0"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        started = [p for p in pods if p.status.phase in ("Running", "Succeeded", "Failed")]
        if started:
            pod = started[0].metadata.name
            self.thread = threading.Thread(target=self._follow, args=(pod,), daemon=True)
            self.thread.start()

    def _follow(self, pod: str) -> None:
        try:
            stream = self.core.read_namespaced_pod_log(
                pod, self.namespace, follow=True, _preload_content=False
            )
            for line in stream:
                log.info("[node 0] %s", line.decode(errors="replace").rstrip())
        except Exception as err:  # the log is a courtesy: the TrainJob's status decides
            log.warning("stopped following %s's log: %s", pod, err)

    def join(self, timeout_s: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout_s)


def run_trainjob(api_client: Any, manifest: dict[str, Any], poll_seconds: float = 5.0) -> None:
    """Create the TrainJob, follow it to its end with the first node's log, then delete it.

    A TrainJob of that name already there (a retried task) is followed rather than created
    again. It is deleted however this ends: completion, failure, an error here or SIGTERM
    (its nodes then get SIGTERM and checkpoint, and a retried task resumes from there).

    Raises:
        SASRecError: with the TrainJob's own message when it fails.
        Preempted: on SIGTERM.
    """
    from kubernetes import client

    from sasrec.training.preemption import Preempted, StopRequests

    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    where = f"TrainJob {namespace}/{name}"
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        log.info("created %s: %d nodes", where, manifest["spec"]["trainer"]["numNodes"])
    except client.ApiException as err:
        if err.status != 409:
            raise _api_error(err, f"create {where}") from err
        log.warning("%s exists (an earlier attempt of this task): following it", where)
    follower = _LogFollower(core, namespace, name)
    try:
        with StopRequests() as stop:
            while (ended := _outcome(_read(custom, namespace, name, where))) is None:
                if stop.requested:
                    raise Preempted(f"{where} deleted; its checkpoint is kept for the retry")
                follower.poll()
                time.sleep(poll_seconds)
    finally:
        _delete(custom, namespace, name, where)
        follower.join(timeout_s=10.0)
    state, message = ended
    if state == "Failed":
        raise SASRecError(f"{where} failed: {message or 'see its pods logs'}")
    log.info("%s completed", where)


def _read(custom: Any, namespace: str, name: str, where: str) -> dict[str, Any]:
    from kubernetes import client

    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except client.ApiException as err:
        raise _api_error(err, f"read {where}") from err


def _delete(custom: Any, namespace: str, name: str, where: str) -> None:
    """Delete the TrainJob and, in the foreground, its JobSet and pods; gone already is fine."""
    from kubernetes import client

    try:
        custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground"
        )
        log.info("deleted %s", where)
    except client.ApiException as err:
        if err.status != 404:
            log.error("could not delete %s (%s): delete it by hand", where, err.reason)


def _api_error(err: Any, action: str) -> SASRecError:
    """One line for a refused Kubernetes call, with what to check."""
    hint = {
        403: "the task's service account needs the Role in deploy/trainjob-rbac.yaml",
        404: "is Kubeflow Trainer v2 installed (the TrainJob CRD and the torch-distributed "
        "runtime)?",
    }.get(err.status, "see the message")
    return SASRecError(f"cannot {action}: HTTP {err.status} {err.reason}; {hint}")


def kubernetes_api_client() -> Any:
    """A client of the cluster this pod runs in (its service account), else of ~/.kube/config."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def current_namespace() -> str:
    """The namespace of this pod (its service account's), else "default"."""
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return os.environ.get("POD_NAMESPACE", "default")


def train_on_nodes(
    sequences_dir: str | Path,
    model_dir: str | Path,
    checkpoint_dir: str | None,
    request: TrainJobRequest,
    api_client: Any,
    poll_seconds: float = 5.0,
) -> dict[str, Any]:
    """Train as a TrainJob (the task's side): stage, run and follow it, fetch the model.

    Args:
        sequences_dir: The task's sequences folder, staged for the nodes.
        model_dir: Where the model the nodes trained is written.
        checkpoint_dir: The run's checkpoint folder, which every node reaches (gs://, s3://
            or a shared mount): the nodes read the sequences and write the model there.
        request: The TrainJob; its args are completed with the staged locations.
        api_client: A Kubernetes API client (`kubernetes_api_client`).
        poll_seconds: Between reads of the TrainJob's status.

    Returns:
        The training summary (training.json).

    Raises:
        SASRecError: without a checkpoint folder, or when the TrainJob fails.
    """
    from sasrec.data import schema
    from sasrec.io import atomic_dir

    if not checkpoint_dir:
        raise SASRecError(
            "train_nodes above 1 needs checkpoint_root (gs://, s3:// or a shared mount): the "
            "nodes read the sequences and write the model there"
        )
    staged = storage.join(checkpoint_dir, STAGED_SEQUENCES)
    model_uri = storage.join(checkpoint_dir, STAGED_MODEL)
    written = [storage.join(staged, name) for name in storage.put_dir(sequences_dir, staged)]
    node_args = ["train-node", "--sequences", str(staged), "--out", str(model_uri)]
    node_args += ["--nproc", str(request.processes_per_node), "--", *request.args]
    manifest = trainjob_manifest(replace(request, args=node_args))
    run_trainjob(api_client, manifest, poll_seconds)
    with atomic_dir(model_dir, schema.TRAIN_STEP) as tmp:
        fetched = storage.get_dir(model_uri, tmp)
    written += [storage.join(model_uri, name) for name in fetched]
    for uri in written:  # what this task and its nodes wrote, by name
        storage.remove_file(uri)
    folders = {str(Path(str(uri)).parent) for uri in written} | {str(staged), str(model_uri)}
    for folder in sorted(folders, key=len, reverse=True):  # the deepest first
        storage.remove_empty_dir(folder)
    return read_json(Path(model_dir) / TRAINING_FILE)


def train_node(
    sequences_uri: str, model_uri: str, num_processes: int, train_args: list[str]
) -> dict[str, Any]:
    """What each node of the TrainJob runs: torchrun over `sasrec train`, rank 0 saves the model.

    The sequences are copied to local disk first. torchrun takes the number of nodes, this
    node's rank and the rendezvous from the PET_* variables the Trainer sets; the node of
    rank 0, which holds global rank 0, copies the model folder to `model_uri`.
    """
    from sasrec.training import distributed

    node_rank = int(os.environ.get("PET_NODE_RANK", "0"))
    with tempfile.TemporaryDirectory(prefix="sasrec-node-") as work:
        sequences_dir, model_dir = Path(work) / "sequences", Path(work) / "model"
        storage.get_dir(sequences_uri, sequences_dir)
        worker = ["sasrec.cli", "train", "--sequences", str(sequences_dir), "--out", str(model_dir)]
        worker += train_args  # no --nproc: under torchrun, `sasrec train` is one worker
        distributed.relaunch_with_torchrun(num_processes, worker, standalone=False)
        if node_rank != 0:
            return {"node_rank": node_rank}
        storage.put_dir(model_dir, model_uri)
        return read_json(model_dir / TRAINING_FILE)
