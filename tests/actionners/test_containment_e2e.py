"""Containment end to end: the real server undoes a ttl, also across a restart; the CLI.

Covers: `python -m talon server` with `containment.reconcile_seconds: 1` labels a pod with
`ttl: 2s`, then removes the label and its mark within a few seconds, logging the undo; a
server stopped before the expiry and a new one started undo it all the same (the state is
on the object); `talon containment list` shows object, what, since, expiry, rule and trace
id; `release OBJECT` and `release --all` undo at once; `extend OBJECT DURATION` moves the
expiry; a bad reference is an error naming the accepted forms; `talon rbac` grants the
expiry loop what it needs for the kinds the rules mark with a ttl, and nothing without.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from talon import cli
from talon.actionners.kubernetes import undo
from tests.actionners.conftest import Acted, event, pod, wait_for
from tests.actionners.test_execs import rules
from tests.actionners.test_nodes import node
from tests.fakes.kube_api import FakeKubeAPI
from tests.support import Launch

LABEL_RULES = """
- rule: R
  match: {rules: [F]}
  actions:
    - {action: A, actionner: kubernetes:label,
       parameters: {labels: {quarantine: "true"}, ttl: 2s}}
"""
FALCO_EVENT = {"rule": "F", "priority": "Warning", "output": "x",
               "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop"}}


def _config(kube_config: Path) -> str:
    return f"kubeconfig: {kube_config}\ncontainment: {{reconcile_seconds: 1}}\n"


def _labels(kube_api: FakeKubeAPI) -> dict[str, str]:
    found = kube_api.get("pods", "shop", "web-1")
    assert found is not None
    return dict(found["metadata"].get("labels") or {})


def test_server_undoes_a_ttl(start: Launch, kube_api: FakeKubeAPI, kube_config: Path) -> None:
    kube_api.add(pod())
    server = start(LABEL_RULES, _config(kube_config))
    assert server.post(FALCO_EVENT) == 200
    wait_for(lambda: _labels(kube_api).get("quarantine") == "true")
    began = time.monotonic()
    wait_for(lambda: "quarantine" not in _labels(kube_api), timeout=10)
    assert time.monotonic() - began < 6
    assert _labels(kube_api) == {"app": "web"}
    server.wait_log(r'"object": "pod/shop/web-1".*"status": "reverted"')


def test_a_restarted_server_undoes_it_too(start: Launch, kube_api: FakeKubeAPI,
                                          kube_config: Path) -> None:
    kube_api.add(pod())
    first = start(LABEL_RULES, _config(kube_config).replace("1}", "60}"))
    assert first.post(FALCO_EVENT) == 200
    wait_for(lambda: _labels(kube_api).get(undo.MARK_LABEL) == "true")
    first.proc.terminate()
    first.proc.wait(10)
    assert _labels(kube_api).get("quarantine") == "true"
    start(LABEL_RULES, _config(kube_config))
    wait_for(lambda: _labels(kube_api) == {"app": "web"}, timeout=10)


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], kube_config: Path, tmp_path: Path) -> Run:
    cfg = tmp_path / "cli.yaml"
    cfg.write_text(f"kubeconfig: {kube_config}\n")

    def call(*argv: str) -> tuple[int, str, str]:
        code = cli.main([*argv, "-c", str(cfg)])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def _contain(act: Callable[..., Acted], kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.add(node())
    for params in ({"labels": {"q": "1"}, "ttl": "1h"},
                   {"labels": {"q": "1"}, "ttl": "1h", "level": "node"}):
        assert act(rules("kubernetes:label", params), event()).done[0][2] == "success"


def test_list_release_extend(act: Callable[..., Acted], kube_api: FakeKubeAPI,
                             run: Run) -> None:
    _contain(act, kube_api)
    code, out, err = run("containment", "list")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["OBJECT", "WHAT", "SINCE", "EXPIRES"]
    assert sorted(r.split()[0] for r in rows) == ["node/node-1", "pod/shop/web-1"]
    assert all("label q=1" in r and " R " in r for r in rows)
    code, out, err = run("containment", "extend", "pod/shop/web-1", "3h")
    assert code == 0, err
    mark = undo.read_mark(kube_api.get("pods", "shop", "web-1") or {})
    assert mark is not None
    assert 3 * 3600 - 60 < undo.parse_time(mark.expires_at) - time.time() <= 3 * 3600
    assert mark.expires_at in out
    code, out, err = run("containment", "release", "node/node-1")
    assert (code, out) == (0, "reverted: node/node-1: undone: label q=1\n"), err
    node_meta: dict[str, Any] = (kube_api.get("nodes", None, "node-1") or {})["metadata"]
    assert "q" not in node_meta["labels"] and undo.MARK_LABEL not in node_meta["labels"]
    code, out, err = run("containment", "release", "--all")
    assert code == 0 and out.startswith("reverted: pod/shop/web-1"), err
    assert _labels(kube_api) == {"app": "web"}
    assert run("containment", "list")[1].count("\n") == 1


def test_bad_references(run: Run, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    code, _out, err = run("containment", "release", "deployment/shop/web")
    assert code == 1 and "pod/NS/NAME" in err and "node/NAME" in err
    code, _out, err = run("containment", "extend", "pod/shop/web-1", "1h")
    assert code == 1 and "carries no containment mark" in err
    code, _out, err = run("containment", "release", "pod/shop/nope")
    assert code == 1 and "does not exist" in err


def test_rbac_grants_the_expiry_loop(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(LABEL_RULES) + textwrap.dedent("""
        - rule: N
          match: {rules: [G]}
          actions:
            - {action: P, actionner: kubernetes:networkpolicy, parameters: {ttl: 1h}}
        """))
    code, out, err = run("rbac", "-r", str(path))
    assert code == 0, err
    role = next(yaml.safe_load_all(out))
    verbs = {(g, r): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert {"list", "patch"} <= verbs[("", "pods")] and {"list", "patch"} <= verbs[("", "nodes")]
    assert {"list", "patch", "delete"} <= verbs[("networking.k8s.io", "networkpolicies")]
    path.write_text(textwrap.dedent(LABEL_RULES).replace(", ttl: 2s", ""))
    role = next(yaml.safe_load_all(run("rbac", "-r", str(path))[1]))
    assert not any("list" in rule["verbs"] for rule in role["rules"])


def test_governor_reset_reaches_a_running_server(start: Launch, kube_api: FakeKubeAPI,
                                                 kube_config: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("web-1", "web-2", "web-3", "web-4"):
        kube_api.add(pod(name))
    reset = tmp_path / "reset"
    cfg = (f"kubeconfig: {kube_config}\ndeduplication: {{time_window_seconds: 0}}\n"
           f"governor: {{budgets: ['cluster:2/3600'], trip_to_dry_run: true, "
           f"reset_file: '{reset}'}}\n")
    server = start("""
- rule: R
  match: {rules: [F]}
  actions: [{action: T, actionner: kubernetes:terminate}]
""", cfg)
    for name in ("web-1", "web-2", "web-3"):
        assert server.post({**FALCO_EVENT, "output_fields": {
            "k8s.pod.name": name, "k8s.ns.name": "shop"}}) == 200
    server.wait_log(r'"status": "tripped"')
    assert server.post({**FALCO_EVENT, "output_fields": {
        "k8s.pod.name": "web-4", "k8s.ns.name": "shop"}}) == 200
    server.wait_log(r'"dry_run": true.*"pod": "web-4"')
    (tmp_path / "cli.yaml").write_text(cfg)
    assert cli.main(["governor", "reset", "-c", str(tmp_path / "cli.yaml")]) == 0
    assert str(reset) in capsys.readouterr().out
    assert server.post({**FALCO_EVENT, "output_fields": {
        "k8s.pod.name": "web-4", "k8s.ns.name": "shop"}}) == 200
    server.wait_log(r'"governor".*reset')
    server.wait_log(r'"pod": "web-4".*"status": "throttled"')  # running again: over budget
    left = sorted(p["metadata"]["name"] for p in kube_api.list("pods", "shop"))
    assert len(left) == 2 and left[-1] == "web-4", left  # events run in parallel: any one
    assert len(kube_api.list("leases", None)) == 1  # of the first three was throttled
