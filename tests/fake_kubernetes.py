"""A plain HTTP server on 127.0.0.1 that speaks the Kubernetes API paths a TrainJob launcher uses.

It answers the real `kubernetes` client: create, read and delete of trainer.kubeflow.org
TrainJobs (the created object validated against the TrainJob CRD's schema, strictly, as
`kubectl --validate=strict` and field validation would), listing pods by label and
streaming a pod's log. A test scripts what the cluster does: the statuses successive reads
see, the first node's log, what creating the TrainJob does (as the nodes would).
"""

import http.server
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml

CRD = Path(__file__).parent / "cluster" / "trainer.kubeflow.org_trainjobs.yaml"
TRAINJOBS = re.compile(
    r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$"
)
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


def strict(schema: Any) -> Any:
    """An OpenAPI v3 schema in which every object refuses fields it does not declare."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def trainjob_schema() -> dict[str, Any]:
    """The v1alpha1 openAPIV3Schema of the TrainJob CRD, strict."""
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return strict(version["schema"]["openAPIV3Schema"])


def trainjob_problems(manifest: dict[str, Any]) -> list[str]:
    """What the API server would refuse in `manifest`: its schema and its name rules."""
    validator = jsonschema.Draft7Validator(trainjob_schema())
    problems = [
        f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(manifest)
    ]
    crd = yaml.safe_load(CRD.read_text())
    rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    name = manifest.get("metadata", {}).get("name", "")
    pattern = re.search(r"matches\('(.+)'\)", rules[0]["rule"]).group(1)
    limit = int(re.search(r"<= (\d+)", rules[1]["rule"]).group(1))
    if not re.fullmatch(pattern, name):
        problems.append(rules[0]["message"])
    if len(name) > limit:
        problems.append(rules[1]["message"])
    return problems


def condition(kind: str, message: str = "") -> dict[str, Any]:
    """A TrainJob status with one condition of `kind` (Complete, Failed) that is true."""
    return {"conditions": [{
        "type": kind, "status": "True", "reason": f"Jobs{kind}", "message": message,
        "lastTransitionTime": "2026-12-07T10:00:00Z",
    }]}  # fmt: skip


@dataclass
class Cluster:
    """What the fake cluster does and what it was asked."""

    statuses: list[dict[str, Any]] = field(default_factory=list)  # one per read, last repeats
    log_lines: list[str] = field(default_factory=list)
    on_create: Callable[[dict[str, Any]], None] | None = None
    create_status: int = 201
    trainjobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    created: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)  # each delete's options
    reads: int = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    cluster: Cluster

    def log_message(self, *args: Any) -> None:
        del args

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._answer(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": reason, "message": message, "code": code})  # fmt: skip

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        self.cluster.requests.append(("POST", path))
        match = TRAINJOBS.match(path)
        if not match or match.group(2):
            return self._status(404, "NotFound", path)
        manifest = self._body()
        if self.cluster.create_status != 201:
            return self._status(self.cluster.create_status, "Forbidden", "trainjobs is forbidden")
        name = manifest["metadata"]["name"]
        if name in self.cluster.trainjobs:
            return self._status(409, "AlreadyExists", f'trainjobs "{name}" already exists')
        problems = trainjob_problems(manifest)
        if problems:
            return self._status(422, "Invalid", "; ".join(problems))
        self.cluster.created.append(manifest)
        self.cluster.trainjobs[name] = manifest
        if self.cluster.on_create is not None:
            self.cluster.on_create(manifest)
        return self._answer(201, manifest)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.cluster.requests.append(("GET", parts.path))
        if match := TRAINJOBS.match(parts.path):
            trainjob = self.cluster.trainjobs.get(match.group(2) or "")
            if trainjob is None:
                return self._status(404, "NotFound", parts.path)
            statuses = self.cluster.statuses or [{}]
            status = statuses[min(self.cluster.reads, len(statuses) - 1)]
            self.cluster.reads += 1
            return self._answer(200, trainjob | {"status": status})
        if match := PODS.match(parts.path):
            selector = parse_qs(parts.query).get("labelSelector", [""])[0]
            labels = dict(pair.split("=", 1) for pair in selector.split(",") if pair)
            name = labels.get("jobset.sigs.k8s.io/jobset-name", "")
            items = []
            if (
                name in self.cluster.trainjobs
                and labels.get("batch.kubernetes.io/job-completion-index") == "0"
            ):
                items.append({"metadata": {"name": f"{name}-node-0-0-abcde", "labels": labels},
                              "status": {"phase": "Running"}})  # fmt: skip
            return self._answer(200, {"kind": "PodList", "apiVersion": "v1", "items": items})
        if POD_LOG.match(parts.path):
            data = "".join(f"{line}\n" for line in self.cluster.log_lines).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        return self._status(404, "NotFound", parts.path)

    def do_DELETE(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        self.cluster.requests.append(("DELETE", path))
        match = TRAINJOBS.match(path)
        if not match or match.group(2) not in self.cluster.trainjobs:
            return self._status(404, "NotFound", path)
        # Delete options come as query parameters or as a DeleteOptions body.
        options = {key: values[0] for key, values in parse_qs(parts.query).items()}
        self.cluster.deleted.append(options | self._body())
        del self.cluster.trainjobs[match.group(2)]
        return self._answer(200, {"kind": "Status", "status": "Success"})


class FakeKubernetes:
    """The server, on a free port of 127.0.0.1, and a `kubernetes` ApiClient for it."""

    def __init__(self, cluster: Cluster) -> None:
        handler = type("Handler", (_Handler,), {"cluster": cluster})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.cluster = cluster
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeKubernetes":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration(host=f"http://127.0.0.1:{self.server.server_port}")
        return client.ApiClient(configuration)
