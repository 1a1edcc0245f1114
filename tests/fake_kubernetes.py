"""A local stand-in for the Kubernetes API server, for tests: the pod endpoints the cncf provider's
clients call (create, read, list, log, delete, events). "Creating" a pod runs its container as a
local subprocess: the container's command and args, its env with `secretKeyRef`s resolved from
`secrets`, and every volume mount path mapped to a fresh directory of its own. Only the far side
of the network boundary is replaced: the provider's own client code talks HTTP to it.

Like a real container, the process gets the environment its spec declares and nothing of the
worker's (no Airflow connection, no API key, no PYTHONPATH): only what stands in for the node
itself (`NODE_ENV`: the interpreter's PATH, locale, thread count) and for the cluster's network
route to GCS (`STORAGE_EMULATOR_HOST`) is passed through.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

# What a pod's process gets from the test's environment: the node (PATH finds the interpreter,
# locale, one OpenMP thread on a shared machine) and the route to the GCS emulator.
NODE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS", "STORAGE_EMULATOR_HOST")

POD_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<log>/log)?)?$")
EVENTS_PATH = re.compile(r"^/api/v1/namespaces/[^/]+/events$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakePod:
    def __init__(self, body: dict[str, Any], secrets: dict[str, dict[str, str]], python: str):
        self.body = body
        meta = body.setdefault("metadata", {})
        meta.update(uid=str(uuid.uuid4()), resourceVersion="1", creationTimestamp=_now())
        self.root = Path(tempfile.mkdtemp(prefix=f"fake-pod-{meta['name'][:40]}-"))
        self.log_path = self.root / "log.txt"
        (container,) = body["spec"]["containers"]
        self.container = container["name"]
        mounts = {m["mountPath"]: self.root / "volumes" / m["name"] / (m.get("subPath") or "").strip("/")
                  for m in container.get("volumeMounts", []) if m["mountPath"] != "/dev/shm"}
        for local in mounts.values():
            local.mkdir(parents=True, exist_ok=True)

        def mapped(value: str) -> str:
            for path in sorted(mounts, key=len, reverse=True):
                if value == path or value.startswith(path + "/"):
                    return str(mounts[path]) + value[len(path):]
            return value

        env = {k: os.environ[k] for k in NODE_ENV if k in os.environ}
        for e in container.get("env", []):
            if e.get("valueFrom"):
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = secrets[ref["name"]][ref["key"]]
            else:
                env[e["name"]] = mapped(e.get("value", ""))
        argv = [python if c == "python" else c for c in container.get("command", [])] + [mapped(a) for a in container.get("args", [])]
        self.started = _now()
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.root)

    def view(self) -> dict[str, Any]:
        rc = self.proc.poll()
        if rc is None:
            state = {"running": {"startedAt": self.started}}
            phase = "Running"
        else:
            state = {"terminated": {"exitCode": rc, "startedAt": self.started, "finishedAt": _now(),
                                    "reason": "Completed" if rc == 0 else "Error"}}
            phase = "Succeeded" if rc == 0 else "Failed"
        status = {
            "phase": phase, "startTime": self.started, "podIP": "10.0.0.2",
            "containerStatuses": [{"name": self.container, "ready": rc is None, "restartCount": 0, "image": "x", "imageID": "x",
                                   "state": state}],
            "conditions": [{"type": "Ready", "status": "True" if rc is None else "False"}],
        }
        return self.body | {"status": status}

    def delete(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


class FakeKubernetes:
    """`with FakeKubernetes(secrets) as k8s:` then point a connection at `k8s.kubeconfig`."""

    def __init__(self, secrets: dict[str, dict[str, str]] | None = None, python: str = sys.executable):
        self.secrets = secrets or {}
        self.python = python
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.deleted: list[str] = []
        self.created: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __enter__(self) -> "FakeKubernetes":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self, what: str) -> None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "message": f"{what} not found", "code": 404})

            def do_POST(self) -> None:
                m = POD_PATH.match(urlparse(self.path).path)
                if not m or m["name"]:
                    return self._not_found(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.created.append(json.loads(json.dumps(body)))
                    pod = FakePod(body, fake.secrets, fake.python)
                    fake.pods[(m["ns"], body["metadata"]["name"])] = pod
                self._send(201, pod.view())

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if EVENTS_PATH.match(url.path):
                    return self._send(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []})
                m = POD_PATH.match(url.path)
                if not m:
                    return self._not_found(url.path)
                if not m["name"]:
                    wanted = dict(kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",") if "=" in kv and "!" not in kv)
                    items = [p.view() for (ns, _), p in fake.pods.items() if ns == m["ns"]
                             and all(p.body["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
                pod = fake.pods.get((m["ns"], m["name"]))
                if pod is None:
                    return self._not_found(f"pods {m['name']!r}")
                if m["log"]:
                    if query.get("follow") == ["true"]:
                        pod.proc.wait()
                    text = pod.log_path.read_bytes()
                    if query.get("timestamps") == ["true"]:
                        text = b"".join(f"{_now()} ".encode() + line for line in text.splitlines(keepends=True))
                    return self._send(200, text, "text/plain")
                self._send(200, pod.view())

            def do_DELETE(self) -> None:
                m = POD_PATH.match(urlparse(self.path).path)
                pod = fake.pods.pop((m["ns"], m["name"]), None) if m and m["name"] else None
                if pod is None:
                    return self._not_found(self.path)
                view = pod.view()
                pod.delete()
                fake.deleted.append(m["name"])
                self._send(200, view)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
        }
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        for pod in self.pods.values():
            pod.delete()
