"""Pod subresources of the fake API server (tests/fakes/kube_api.py); stdlib only.

Container selection with the apiserver's 400 messages (logs, exec, attach), log tails, the
eviction checks against PodDisruptionBudgets, ephemeral containers reported as running, the
exec/attach query decoding, and what a DELETE of a pod or namespace answers.
"""

from __future__ import annotations

import secrets
from typing import Any

from tests.fakes import kube_http, kube_ws
from tests.fakes.kube_resources import (
    JSON,
    PODS,
    ResourceDef,
    bad_request,
    clone,
    internal_error,
    pdb_refusal,
)
from tests.fakes.kube_store import Store, now, selector_matches

EVICTION_SAFE_PHASES = ("Succeeded", "Failed", "Pending")
"""Pods in these phases are evicted without consulting disruption budgets."""


def container_for(pod: JSON, requested: str | None) -> str:
    """The container a log/exec/attach request targets."""
    spec = pod.get("spec") or {}
    names = [str(c.get("name")) for c in spec.get("containers") or []]
    init = [str(c.get("name")) for c in spec.get("initContainers") or []]
    ephemeral = [str(c.get("name")) for c in spec.get("ephemeralContainers") or []]
    pod_name = pod["metadata"]["name"]
    if requested:
        if requested not in names + init + ephemeral:
            raise bad_request(f"container {requested} is not valid for pod {pod_name}")
        return requested
    if len(names) == 1:
        return names[0]
    message = (f"a container name must be specified for pod {pod_name}, choose one of: "
               f"[{' '.join(names)}]")
    if init:
        message += f" or one of the init containers: [{' '.join(init)}]"
    if ephemeral:
        message += f" or one of the ephemeral containers: [{' '.join(ephemeral)}]"
    raise bad_request(message)


def log_slice(data: bytes, tail_lines: int | None, limit_bytes: int | None) -> bytes:
    """`tailLines` (last N lines, a last line without newline counts) then `limitBytes`."""
    if tail_lines is not None:
        data = b"".join(data.splitlines(keepends=True)[-tail_lines:]) if tail_lines > 0 else b""
    return data[:limit_bytes] if limit_bytes is not None else data


def check_budgets(store: Store, pdb_rd: ResourceDef, pod: JSON) -> None:
    """Refuse (429) or account for an eviction as the disruption controller would."""
    if (pod.get("status") or {}).get("phase") in EVICTION_SAFE_PHASES:
        return
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    budgets = [b for b in store.items(pdb_rd, meta["namespace"])
               if selector_matches((b.get("spec") or {}).get("selector"), labels)]
    if len(budgets) > 1:
        raise internal_error("This pod has more than one PodDisruptionBudget, which the "
                             "eviction subresource does not support.")
    if not budgets:
        return
    budget = budgets[0]
    status = budget.setdefault("status", {})
    if int(status.get("disruptionsAllowed") or 0) < 1:
        raise pdb_refusal(budget["metadata"]["name"], int(status.get("desiredHealthy", 0)),
                          int(status.get("currentHealthy", 0)))
    status["disruptionsAllowed"] = int(status["disruptionsAllowed"]) - 1
    store.put(pdb_rd, budget)


def start_ephemeral(store: Store, namespace: str, name: str) -> None:
    """Report every ephemeral container without a status as running (as the kubelet would)."""
    with store.lock:
        pod = store.find(PODS, namespace, name)
        if pod is None:
            return
        statuses = pod.setdefault("status", {}).setdefault("ephemeralContainerStatuses", [])
        known = {s.get("name") for s in statuses}
        fresh = [c for c in (pod.get("spec") or {}).get("ephemeralContainers") or []
                 if c.get("name") not in known]
        if fresh:
            statuses.extend(_running_status(c) for c in fresh)
            store.put(PODS, pod)


def _running_status(container: JSON) -> JSON:
    return {"name": container.get("name"), "image": container.get("image", ""), "imageID": "",
            "containerID": f"containerd://{secrets.token_hex(32)}", "ready": False,
            "restartCount": 0, "state": {"running": {"startedAt": now()}}}


def exec_request(request: kube_http.RecordedRequest, route: kube_http.Route,
                 pod: JSON) -> kube_ws.ExecRequest:
    """Decode and check the query of pods/{name}/exec or /attach."""
    kind = route.subresource or "exec"
    flags: dict[str, Any] = {name: kube_http.truthy(request.param(name))
                             for name in ("stdin", "stdout", "stderr", "tty")}
    argv = tuple(request.query.get("command", [])) if kind == "exec" else ()
    if kind == "exec" and not argv:
        raise bad_request("you must specify at least 1 command")
    if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
        raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise bad_request(f"cannot {kind} into a container in a completed pod; current phase "
                          f"is {phase}")
    container = container_for(pod, request.param("container"))
    return kube_ws.ExecRequest(kind, route.namespace or "", route.name or "", container, argv,
                               **flags)


def deleted_view(rd: ResourceDef, obj: JSON, grace: int | None) -> JSON:
    """The object a DELETE answers: a graceful pod or a namespace shows its pending end."""
    view = clone(obj)
    meta = view["metadata"]
    if rd.resource == "pods":
        if grace is None:
            grace = int((view.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        if grace > 0:
            meta["deletionTimestamp"] = now()
            meta["deletionGracePeriodSeconds"] = grace
    elif rd.resource == "namespaces":
        meta["deletionTimestamp"] = now()
        view.setdefault("status", {})["phase"] = "Terminating"
    return view
