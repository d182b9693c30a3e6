"""The catalog of built-in actionners, outputs and contexts: metadata and parameter rules.

Behaviours covered:
- importing talon.actionners, talon.outputs and talon.contexts registers exactly the 17
  actionners, 4 outputs and 2 contexts, and imports none of the SDKs (kubernetes, boto3,
  minio, google.cloud), checked in a fresh interpreter;
- conformance, for every registered plug-in: description, example and parameter help are
  set; params is a frozen, slotted, keyword-only dataclass whose defaults are valid;
  `requires` names are importable; the example is one YAML action whose parameters (and
  output parameters) coerce with no error and no warning, and which names the plug-in;
- the metadata tables: default continue, output allowed/required, use_context, sources,
  required Falco fields, SDK requirements, RBAC rules;
- each parameter rule, with the exact field and message: min_healthy_replicas (shared by
  terminate and drain), label/annotation keys and values, CIDRs and namespaces of the three
  network policy actionners, script/file exclusivity, ranges of log/tcpdump/sysdig/gcp,
  Literal choices, required values, drain's two spellings of ignore_errors, bucket names and
  the absolute destination of the outputs; the seed's invalid examples are rejected.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from typing import Any

import pytest
import yaml

import talon.actionners
import talon.contexts
import talon.outputs
from talon import params
from talon.actionners import aws as aws_actionners
from talon.actionners import calico, cilium, gcp
from talon.actionners.kubernetes import capture, execs, networkpolicy, nodes, pods, targets
from talon.contexts import aws as aws_context
from talon.contexts import k8snode
from talon.outputs import aws as aws_outputs
from talon.outputs import gcp as gcp_outputs
from talon.outputs import local, minio
from talon.registry import REGISTRY, Permission, Plugin

assert talon.actionners and talon.outputs and talon.contexts

ACTIONNERS = {
    "kubernetes:terminate", "kubernetes:label", "kubernetes:annotation",
    "kubernetes:networkpolicy", "kubernetes:exec", "kubernetes:script", "kubernetes:log",
    "kubernetes:download", "kubernetes:tcpdump", "kubernetes:sysdig", "kubernetes:delete",
    "kubernetes:cordon", "kubernetes:drain", "calico:networkpolicy", "cilium:networkpolicy",
    "aws:lambda", "gcp:function",
}
OUTPUTS = {"local:file", "aws:s3", "minio:s3", "gcp:gcs"}
CONTEXTS = {"aws", "k8snode"}
ACTION_KEYS = {"action", "description", "actionner", "parameters", "output", "continue",
               "ignore_errors", "additional_contexts"}

PLUGINS = [p for kind in ("actionner", "output", "context") for p in REGISTRY.all(kind)]
WITH_PARAMS = [p for p in PLUGINS if p.info.kind != "context"]


def _id(plugin: Plugin) -> str:
    return f"{plugin.info.kind}-{plugin.fullname}"


UNPINNED = "is not pinned by digest"
"""The one warning a valid capture image gets: kept tags are advised against."""


def ok(cls: type, raw: dict[str, Any]) -> Any:
    """Coerce `raw`, expecting no problem but an unpinned image; return the instance."""
    instance, problems = params.coerce(cls, raw)
    assert [p for p in problems if not (p.field == "image" and UNPINNED in p.message)] == []
    assert instance is not None
    return instance


def problem(cls: type, raw: dict[str, Any]) -> tuple[str, str, str]:
    """Coerce `raw`, expecting exactly one problem; return (field, message, severity)."""
    _, problems = params.coerce(cls, raw)
    assert len(problems) == 1, problems
    return problems[0].field, problems[0].message, problems[0].severity


def error(cls: type, raw: dict[str, Any]) -> tuple[str, str]:
    """Coerce `raw`, expecting exactly one error and no instance; return (field, message)."""
    instance, _ = params.coerce(cls, raw)
    field, message, severity = problem(cls, raw)
    assert severity == "error"
    assert instance is None
    return field, message


# --- the catalog as a whole ---------------------------------------------------------------


def test_catalog_has_every_builtin_plugin() -> None:
    assert set(REGISTRY.names("actionner")) >= ACTIONNERS
    assert set(REGISTRY.names("output")) >= OUTPUTS
    assert set(REGISTRY.names("context")) >= CONTEXTS
    assert {p.fullname for p in PLUGINS} == ACTIONNERS | OUTPUTS | CONTEXTS


def test_importing_the_catalog_imports_no_sdk() -> None:
    code = ("import talon.actionners, talon.outputs, talon.contexts, sys\n"
            "loaded = {'kubernetes', 'boto3', 'botocore', 'minio', 'google.cloud',\n"
            "          'google.cloud.storage', 'google.auth'} & set(sys.modules)\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr


# --- conformance, per plug-in ------------------------------------------------------------


@pytest.mark.parametrize("plugin", PLUGINS, ids=_id)
def test_metadata_is_complete(plugin: Plugin) -> None:
    info = plugin.info
    assert info.description.strip()
    assert info.example.strip()
    for module in info.requires:
        assert importlib.util.find_spec(module) is not None, module
    for rule in info.permissions:
        assert isinstance(rule, Permission)
        assert rule.api_groups and rule.resources and rule.verbs
    if "kubernetes" in info.requires:
        assert info.permissions
    if info.kind == "context":
        assert info.params is None
        assert info.category == "context"


@pytest.mark.parametrize("plugin", WITH_PARAMS, ids=_id)
def test_params_is_a_frozen_keyword_only_dataclass(plugin: Plugin) -> None:
    cls = plugin.info.params
    assert cls is not None and dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert "__slots__" in vars(cls)
    assert cls.__name__.endswith("Params")
    for f in dataclasses.fields(cls):
        assert f.kw_only, f.name
        assert str(f.metadata.get("help", "")).strip(), f"{f.name} has no help"
    specs = params.describe(cls)
    assert [s.name for s in specs] == [f.name for f in dataclasses.fields(cls)]


CAPTURES = ("kubernetes:tcpdump", "kubernetes:sysdig")


@pytest.mark.parametrize("plugin", WITH_PARAMS, ids=_id)
def test_defaults_are_valid(plugin: Plugin) -> None:
    cls = plugin.info.params
    assert cls is not None
    required = [s.name for s in params.describe(cls) if s.required]
    _, problems = params.coerce(cls, {})
    advice = [p.field for p in problems if p.severity == "warning"]
    # the capture images keep the Go version's tags: valid, but not pinned by digest
    assert advice == (["image"] if plugin.fullname in CAPTURES else [])
    problems = [p for p in problems if p.severity == "error"]
    if plugin.fullname == "kubernetes:script":  # one of two optional fields is required
        assert [(p.field, p.message) for p in problems] == [
            ("script", "missing parameter 'script' or 'file'")]
        return
    assert [(p.field, p.message) for p in problems] == [
        (name, "required parameter is missing") for name in required]
    if not required:
        assert params.coerce(cls, {})[0] == cls()


def _load_example(plugin: Plugin) -> dict[str, Any]:
    loaded = yaml.safe_load(plugin.info.example)
    assert isinstance(loaded, list) and len(loaded) == 1
    action = loaded[0]
    assert isinstance(action, dict)
    assert set(action) <= ACTION_KEYS
    assert isinstance(action["action"], str) and action["action"]
    return action


@pytest.mark.parametrize("plugin", PLUGINS, ids=_id)
def test_example_is_one_valid_action(plugin: Plugin) -> None:
    action = _load_example(plugin)
    actionner = REGISTRY.get("actionner", action["actionner"]).info
    assert actionner.params is not None
    ok(actionner.params, action.get("parameters") or {})
    output = action.get("output")
    if actionner.require_output:
        assert output is not None
    if not (actionner.allow_output or actionner.require_output):
        assert output is None
    if output is not None:
        assert set(output) == {"target", "parameters"}
        target = REGISTRY.get("output", output["target"]).info
        assert target.params is not None
        ok(target.params, output["parameters"])
    info = plugin.info
    if info.kind == "actionner":
        assert action["actionner"] == info.fullname
    elif info.kind == "output":
        assert output is not None and output["target"] == info.fullname
    else:
        assert info.name in action["additional_contexts"]
        assert actionner.use_context


# --- metadata tables ----------------------------------------------------------------------


def _actionner(fullname: str) -> Any:
    return REGISTRY.get("actionner", fullname).info


@pytest.mark.parametrize("fullname", sorted(ACTIONNERS))
def test_default_continue(fullname: str) -> None:
    stops = {"kubernetes:terminate", "kubernetes:delete", "kubernetes:tcpdump",
             "kubernetes:sysdig"}
    assert _actionner(fullname).default_continue is (fullname not in stops)


@pytest.mark.parametrize("fullname", sorted(ACTIONNERS))
def test_output_use_context_and_sources(fullname: str) -> None:
    info = _actionner(fullname)
    required = {"kubernetes:download", "kubernetes:tcpdump", "kubernetes:sysdig"}
    assert info.require_output is (fullname in required)
    assert info.allow_output is (fullname == "kubernetes:log")
    with_context = {"kubernetes:exec", "kubernetes:script", "kubernetes:download",
                    "aws:lambda", "gcp:function"}
    assert info.use_context is (fullname in with_context)
    sources = {"kubernetes:delete": ("k8s_audit",), "aws:lambda": ("any",),
               "gcp:function": ("any",)}
    assert info.sources == sources.get(fullname, ("syscalls",))


@pytest.mark.parametrize("fullname", sorted(ACTIONNERS))
def test_required_fields_and_requires(fullname: str) -> None:
    info = _actionner(fullname)
    pod = ("k8s.pod.name", "k8s.ns.name")
    fields = {
        "kubernetes:delete": ("ka.target.resource", "ka.target.name"),
        "calico:networkpolicy": (*pod, "fd.rip|fd.sip"),
        "cilium:networkpolicy": (*pod, "fd.rip|fd.sip"),
        "aws:lambda": (), "gcp:function": (),
    }
    assert info.required_fields == fields.get(fullname, pod)
    requires = {"aws:lambda": ("boto3",), "gcp:function": ("google.auth", "requests")}
    assert info.requires == requires.get(fullname, ("kubernetes",))
    if fullname in ("aws:lambda", "gcp:function"):
        assert info.permissions == ()
        assert info.cloud_permissions


def test_outputs_metadata() -> None:
    get = REGISTRY.get
    assert get("output", "local:file").info.requires == ()
    assert get("output", "aws:s3").info.requires == ("boto3",)
    assert get("output", "minio:s3").info.requires == ("minio",)
    assert get("output", "gcp:gcs").info.requires == ("google.cloud.storage",)
    assert "s3:PutObject" in get("output", "aws:s3").info.cloud_permissions
    assert "storage.objects.create" in get("output", "gcp:gcs").info.cloud_permissions
    assert [p.info.description for p in REGISTRY.all("output")] == [
        "Store on AWS S3", "Store on Google Cloud Storage", "Store on local filesystem",
        "Store on Minio"]


def test_rbac_rules_of_some_actionners() -> None:
    assert _actionner("kubernetes:terminate").permissions == (
        Permission(("",), ("pods",), ("get", "delete")),
        Permission(("apps",), ("replicasets",), ("get",)))
    assert _actionner("kubernetes:sysdig").permissions == (
        Permission(("",), ("pods",), ("get", "list")),
        Permission(("batch",), ("jobs",), ("create", "delete")),
        Permission(("",), ("pods/exec",), ("get", "create")))
    assert _actionner("kubernetes:tcpdump").permissions[1] == Permission(
        ("",), ("pods/ephemeralcontainers",), ("patch",))
    deletable = {r.resources[0] for r in _actionner("kubernetes:delete").permissions}
    assert deletable == {"namespaces", "pods", "daemonsets", "deployments", "replicasets",
                         "statefulsets", "roles", "clusterroles", "configmaps", "secrets",
                         "services", "serviceaccounts"}
    owners = (Permission(("apps",), ("daemonsets",), ("get",)),
              Permission(("apps",), ("replicasets",), ("get",)),
              Permission(("apps",), ("statefulsets",), ("get",)))
    pods_get = Permission(("",), ("pods",), ("get",))
    assert _actionner("calico:networkpolicy").permissions == (
        pods_get, Permission(("projectcalico.org",), ("networkpolicies",),
                             ("get", "create", "update", "patch")), *owners)
    assert _actionner("cilium:networkpolicy").permissions == (
        pods_get, Permission(("cilium.io",), ("ciliumnetworkpolicies",),
                             ("get", "create", "update", "patch")), *owners)
    assert _actionner("aws:lambda").cloud_permissions.count("lambda:GetFunction") == 1


def test_contexts_describe_their_keys() -> None:
    aws_info = REGISTRY.get("context", "aws").info
    node_info = REGISTRY.get("context", "k8snode").info
    assert aws_context.KEYS == ("aws.instance_profile_arn", "aws.instance_profile_id",
                                "aws.region", "aws.instance_id", "aws.availability_zone")
    assert k8snode.KEYS == ("node.hostname", "node.instancetype", "node.role",
                            "node.topology.region", "node.topology.zone",
                            "node.spec.providerid")
    assert all(key in aws_info.description for key in aws_context.KEYS)
    assert all(key in node_info.description for key in k8snode.KEYS)
    assert aws_info.requires == ()
    assert node_info.requires == ("kubernetes",)
    assert node_info.permissions == (Permission(("",), ("pods",), ("get",)),
                                     Permission(("",), ("nodes",), ("get",)))


# --- terminate and drain ------------------------------------------------------------------


def test_terminate_defaults() -> None:
    assert ok(pods.TerminateParams, {}) == pods.TerminateParams(
        grace_period_seconds=0, ignore_daemonsets=False, ignore_statefulsets=False,
        ignore_standalone_pods=False, min_healthy_replicas="")


@pytest.mark.parametrize("value", ["", "0", "3", "12", "0%", "33%", "100%"])
def test_min_healthy_replicas_accepts(value: str) -> None:
    assert ok(pods.TerminateParams, {"min_healthy_replicas": value}).min_healthy_replicas \
        == value
    assert ok(nodes.DrainParams, {"min_healthy_replicas": value}).min_healthy_replicas == value


@pytest.mark.parametrize("value", ["101%", "-1", "abc", "5 pods", "3.5", "%", "50%%", " 3"])
@pytest.mark.parametrize("cls", [pods.TerminateParams, nodes.DrainParams])
def test_min_healthy_replicas_rejects(cls: type, value: str) -> None:
    assert error(cls, {"min_healthy_replicas": value}) == (
        "min_healthy_replicas",
        f"parameter 'min_healthy_replicas' must be an integer >= 0 or a percentage "
        f"between 0% and 100%, got '{value}'")


def test_min_healthy_replicas_must_be_quoted() -> None:
    assert error(pods.TerminateParams, {"min_healthy_replicas": 3}) == (
        "min_healthy_replicas", 'expected a string, got integer 3 (quote it: "3")')


def test_terminate_grace_period_is_not_negative() -> None:
    assert error(pods.TerminateParams, {"grace_period_seconds": -1}) == (
        "grace_period_seconds", "must be >= 0, got -1")


def test_drain_defaults_and_ignore_errors_spellings() -> None:
    drain = ok(nodes.DrainParams, {})
    assert (drain.ignore_daemonsets, drain.ignore_statefulsets, drain.ignore_errors,
            drain.ignore_error, drain.max_wait_period, drain.wait_period_excluded_namespaces,
            drain.min_healthy_replicas) == (False, False, False, False, 0, (), "")
    assert drain.errors_ignored is False
    assert ok(nodes.DrainParams, {"ignore_errors": True}).errors_ignored is True
    assert ok(nodes.DrainParams, {"ignore_error": True}).errors_ignored is True
    excluded = ok(nodes.DrainParams, {"wait_period_excluded_namespaces": ["kube-system"]})
    assert excluded.wait_period_excluded_namespaces == ("kube-system",)
    assert error(nodes.DrainParams, {"max_wait_period": -5}) == (
        "max_wait_period", "must be >= 0, got -5")


@pytest.mark.parametrize(("cls", "known"), [(targets.DeleteParams, "none"),
                                           (nodes.CordonParams, "ttl")])
def test_no_parameter_actionners_report_unknown_keys(cls: type, known: str) -> None:
    assert ok(cls, {}) == cls()
    assert problem(cls, {"tail_lines": 200}) == (
        "tail_lines", f"unknown parameter; known parameters: {known}", "warning")


# --- label and annotation -----------------------------------------------------------------


def test_label_needs_at_least_one_label() -> None:
    assert error(pods.LabelParams, {"labels": {}}) == (
        "labels", "parameter 'labels' should have at least one label")
    assert error(pods.LabelParams, {}) == ("labels", "required parameter is missing")
    assert error(pods.AnnotationParams, {"annotations": {}}) == (
        "annotations", "parameter 'annotations' should have at least one annotation")


def test_label_and_annotation_values_written_as_yaml_scalars_become_their_text() -> None:
    raw = {"labels": {"suspicious": True, "count": 3, "ratio": 1.5, "off": False}}
    label, problems = params.coerce(pods.LabelParams, raw)
    assert dict(label.labels) == {"suspicious": "true", "count": "3", "ratio": "1.5",
                                  "off": "false"}
    assert [(p.field, p.severity) for p in problems] == [
        ("labels.suspicious", "warning"), ("labels.count", "warning"),
        ("labels.ratio", "warning"), ("labels.off", "warning")]
    assert problems[0].message == (
        'a YAML boolean, taken as the string "true": quote it (suspicious: "true")')
    assert problems[1].message == (
        'a YAML number, taken as the string "3": quote it (count: "3")')
    note, problems = params.coerce(pods.AnnotationParams, {"annotations": {"seen": 1}})
    assert dict(note.annotations) == {"seen": "1"}
    assert [p.field for p in problems] == ["annotations.seen"]
    label = ok(pods.LabelParams, {"labels": {"suspicious": "true"}})
    assert dict(label.labels) == {"suspicious": "true"}
    assert label.level == "pod"


def test_other_string_parameters_still_need_quotes() -> None:
    assert error(pods.LabelParams, {"labels": {"a": "b"}, "level": True})[0] == "level"
    assert error(pods.LabelParams, {"labels": {"a": [1]}}) == (
        "labels.a", "expected a string, got list [1]")


@pytest.mark.parametrize("key", ["app", "app.kubernetes.io/name", "a_b.c-D9", "x" * 63,
                                 "example.com/" + "n" * 63, "Z"])
@pytest.mark.parametrize("value", ["", "true", "v1.2_3-x", "A" * 63])
def test_label_accepts_kubernetes_keys_and_values(key: str, value: str) -> None:
    label = ok(pods.LabelParams, {"labels": {key: value}, "level": "node"})
    assert dict(label.labels) == {key: value}
    assert label.level == "node"


NAME_RULE = ("1 to 63 characters among letters, digits, '-', '_' and '.', "
             "starting and ending with a letter or digit")
PREFIX_RULE = ("the prefix must be a DNS subdomain (lowercase letters, digits, '-' and '.', "
               "at most 253 characters)")


@pytest.mark.parametrize(("key", "reason"), [
    ("-app", f"the name must be {NAME_RULE}"),
    ("app-", f"the name must be {NAME_RULE}"),
    ("a b", f"the name must be {NAME_RULE}"),
    ("x" * 64, f"the name must be {NAME_RULE}"),
    ("", f"the name must be {NAME_RULE}"),
    ("example.com/", f"the name must be {NAME_RULE}"),
    ("Example.com/app", PREFIX_RULE),
    ("/app", PREFIX_RULE),
    ("a..b/app", PREFIX_RULE),
    ("a/b/c", "at most one '/' is allowed"),
])
def test_label_and_annotation_reject_bad_keys(key: str, reason: str) -> None:
    assert error(pods.LabelParams, {"labels": {key: "x"}}) == (
        f"labels.{key}", f"invalid label key '{key}': {reason}")
    assert error(pods.AnnotationParams, {"annotations": {key: "x"}}) == (
        f"annotations.{key}", f"invalid annotation key '{key}': {reason}")


@pytest.mark.parametrize("value", ["-x", "x-", "has space", "x" * 64, "a/b", "ünï"])
def test_label_rejects_bad_values(value: str) -> None:
    assert error(pods.LabelParams, {"labels": {"app": value}}) == (
        "labels.app", f"invalid label value '{value}': must be empty (to remove the label) "
                      f"or {NAME_RULE}")


def test_annotation_values_are_free_text() -> None:
    text = "anything goes: spaces, ünïcode, / and a very long line " + "x" * 300
    annotation = ok(pods.AnnotationParams, {"annotations": {"note": text, "old": ""}})
    assert dict(annotation.annotations) == {"note": text, "old": ""}


def test_label_level_is_pod_or_node() -> None:
    assert error(pods.LabelParams, {"labels": {"a": "b"}, "level": "cluster"}) == (
        "level", "must be one of pod, node, got 'cluster'")


# --- network policies ---------------------------------------------------------------------

NETPOL_PARAMS = [networkpolicy.NetworkPolicyParams, calico.CalicoNetworkPolicyParams,
                 cilium.CiliumNetworkPolicyParams]


@pytest.mark.parametrize("cls", NETPOL_PARAMS)
def test_networkpolicy_accepts_cidrs_and_namespaces(cls: type) -> None:
    assert ok(cls, {}).allow_cidr == ()
    assert ok(cls, {}).allow_namespaces == ()
    policy = ok(cls, {"allow_cidr": ["10.0.0.0/8", "192.168.1.1/24", "2001:db8::/32"],
                      "allow_namespaces": ["default", "green-ns", "a" * 63]})
    assert policy.allow_cidr == ("10.0.0.0/8", "192.168.1.1/24", "2001:db8::/32")
    assert policy.allow_namespaces == ("default", "green-ns", "a" * 63)


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "not-a-cidr", "10.0.0.1", "", "10.0.0/8",
                                  "0.0.0.0/0/0"])
@pytest.mark.parametrize("cls", NETPOL_PARAMS)
def test_networkpolicy_rejects_wrong_cidrs(cls: type, cidr: str) -> None:
    assert error(cls, {"allow_cidr": ["10.0.0.0/8", cidr]}) == (
        "allow_cidr[1]", f"wrong CIDR '{cidr}'")


@pytest.mark.parametrize("namespace", ["Green", "-ns", "ns-", "ns_1", "a" * 64, "a.b", ""])
@pytest.mark.parametrize("cls", NETPOL_PARAMS)
def test_networkpolicy_rejects_wrong_namespaces(cls: type, namespace: str) -> None:
    assert error(cls, {"allow_namespaces": [namespace]}) == (
        "allow_namespaces[0]",
        f"wrong namespace '{namespace}': must be a DNS label (at most 63 lowercase letters, "
        f"digits and '-', starting and ending with a letter or digit)")


@pytest.mark.parametrize("cls", NETPOL_PARAMS)
def test_networkpolicy_lists_must_be_lists(cls: type) -> None:
    assert error(cls, {"allow_cidr": "10.0.0.0/8"}) == (
        "allow_cidr", "expected a list, got string '10.0.0.0/8'")


def test_calico_order() -> None:
    assert ok(calico.CalicoNetworkPolicyParams, {}).order == 0
    assert ok(calico.CalicoNetworkPolicyParams, {"order": 20}).order == 20
    assert error(calico.CalicoNetworkPolicyParams, {"order": "20"}) == (
        "order", "expected an integer, got string '20'")
    assert problem(cilium.CiliumNetworkPolicyParams, {"order": 20})[::2] == (
        "order", "warning")


# --- exec, script, log, download ----------------------------------------------------------


def test_exec_needs_a_command() -> None:
    assert error(execs.ExecParams, {}) == ("command", "required parameter is missing")
    assert error(execs.ExecParams, {"command": "  "}) == (
        "command", "parameter 'command' can't be empty")
    exec_ = ok(execs.ExecParams, {"command": "cat ${FD_NAME}"})
    assert (exec_.command, exec_.shell) == ("cat ${FD_NAME}", "/bin/sh")


def test_script_needs_exactly_one_of_script_and_file() -> None:
    assert error(execs.ScriptParams, {}) == ("script", "missing parameter 'script' or 'file'")
    assert error(execs.ScriptParams, {"script": "ps", "file": "/x.sh"}) == (
        "script", "'script' and 'file' parameters can't be set at the same time")
    inline = ok(execs.ScriptParams, {"script": "ps awxuf\n"})
    assert (inline.script, inline.file, inline.shell) == ("ps awxuf\n", "", "/bin/sh")


def test_script_file_is_not_looked_at_by_the_params(tmp_path: Any) -> None:
    missing = str(tmp_path / "does-not-exist.sh")
    assert ok(execs.ScriptParams, {"file": missing, "shell": "/bin/bash"}).file == missing


def test_log_tail_lines() -> None:
    assert ok(execs.LogParams, {}).tail_lines == 20
    assert ok(execs.LogParams, {"tail_lines": 0}).tail_lines == 0
    assert ok(execs.LogParams, {"tail_lines": 200.0}).tail_lines == 200
    assert error(execs.LogParams, {"tail_lines": -1}) == ("tail_lines", "must be >= 0, got -1")
    assert error(execs.LogParams, {"tail_lines": "20"}) == (
        "tail_lines", "expected an integer, got string '20'")


def test_download_needs_a_file_not_tail_lines() -> None:
    assert ok(execs.DownloadParams, {"file": "/etc/passwd"}).file == "/etc/passwd"
    _, problems = params.coerce(execs.DownloadParams, {"tail_lines": 200})
    assert [(p.field, p.severity) for p in problems] == [
        ("tail_lines", "warning"), ("file", "error")]
    assert error(execs.DownloadParams, {"file": ""}) == (
        "file", "parameter 'file' can't be empty")


# --- captures -----------------------------------------------------------------------------


def test_tcpdump_parameters() -> None:
    tcpdump = ok(capture.TcpdumpParams, {})
    assert (tcpdump.duration, tcpdump.snaplen, tcpdump.image) == (5, 4096,
                                                                 "issif/tcpdump:latest")
    assert ok(capture.TcpdumpParams, {"snaplen": 0, "duration": 3600}).snaplen == 0
    assert error(capture.TcpdumpParams, {"duration": 0}) == ("duration", "must be >= 1, got 0")
    assert error(capture.TcpdumpParams, {"duration": 3601}) == (
        "duration", "must be <= 3600, got 3601")
    assert error(capture.TcpdumpParams, {"snaplen": -1}) == ("snaplen", "must be >= 0, got -1")
    image = next(s for s in params.describe(capture.TcpdumpParams) if s.name == "image")
    assert "air-gapped" in image.help


def test_sysdig_parameters() -> None:
    sysdig = ok(capture.SysdigParams, {})
    assert (sysdig.duration, sysdig.buffer_size, sysdig.scope, sysdig.image) == (
        5, 2048, "pod", "issif/sysdig:latest")
    assert ok(capture.SysdigParams, {"duration": 30, "buffer_size": 128,
                                     "scope": "node"}).scope == "node"
    assert error(capture.SysdigParams, {"duration": 31}) == ("duration", "must be <= 30, got 31")
    assert error(capture.SysdigParams, {"duration": 0}) == ("duration", "must be >= 1, got 0")
    assert error(capture.SysdigParams, {"buffer_size": 127}) == (
        "buffer_size", "must be >= 128, got 127")
    assert error(capture.SysdigParams, {"scope": "cluster"}) == (
        "scope", "must be one of pod, node, got 'cluster'")


# --- cloud actionners ---------------------------------------------------------------------


def test_lambda_parameters() -> None:
    lambda_ = ok(aws_actionners.LambdaParams, {"aws_lambda_name": "fn"})
    assert (lambda_.aws_lambda_alias_or_version, lambda_.aws_lambda_invocation_type) == (
        "$LATEST", "RequestResponse")
    assert ok(aws_actionners.LambdaParams, {"aws_lambda_name": "fn",
                                            "aws_lambda_invocation_type": "Event"})
    assert error(aws_actionners.LambdaParams, {}) == (
        "aws_lambda_name", "required parameter is missing")
    assert error(aws_actionners.LambdaParams, {"aws_lambda_name": ""}) == (
        "aws_lambda_name", "parameter 'aws_lambda_name' can't be empty")
    assert error(aws_actionners.LambdaParams, {"aws_lambda_name": "fn",
                                               "aws_lambda_invocation_type": "Async"}) == (
        "aws_lambda_invocation_type",
        "must be one of RequestResponse, Event, DryRun, got 'Async'")


def test_gcp_function_parameters() -> None:
    function = ok(gcp.FunctionParams, {"gcp_function_name": "fn",
                                       "gcp_function_location": "us-central1"})
    assert function.gcp_function_timeout == 10
    _, problems = params.coerce(gcp.FunctionParams, {})
    assert [(p.field, p.message) for p in problems] == [
        ("gcp_function_name", "required parameter is missing"),
        ("gcp_function_location", "required parameter is missing")]
    assert error(gcp.FunctionParams, {"gcp_function_name": "fn", "gcp_function_location": "x",
                                      "gcp_function_timeout": 0}) == (
        "gcp_function_timeout", "must be >= 1, got 0")
    assert error(gcp.FunctionParams, {"gcp_function_name": "fn",
                                      "gcp_function_location": " "}) == (
        "gcp_function_location", "parameter 'gcp_function_location' can't be empty")


# --- outputs ------------------------------------------------------------------------------


def test_local_file_destination_is_absolute() -> None:
    assert ok(local.FileParams, {"destination": "/var/log/talon/"}).destination \
        == "/var/log/talon/"
    assert error(local.FileParams, {}) == ("destination", "required parameter is missing")
    for relative in ("var/log", "./captures", "", "${HOME}/x"):
        assert error(local.FileParams, {"destination": relative}) == (
            "destination", f"parameter 'destination' must be an absolute path, got '{relative}'")


S3_RULE = "expected 3 to 63 lowercase letters, digits, '.' or '-'"


@pytest.mark.parametrize("cls", [aws_outputs.S3Params, minio.MinioS3Params])
def test_s3_buckets(cls: type) -> None:
    s3 = ok(cls, {"bucket": "falco-talon.logs"})
    assert (s3.bucket, s3.prefix) == ("falco-talon.logs", "")
    assert ok(cls, {"bucket": "abc", "prefix": "/files/"}).prefix == "/files/"
    assert ok(cls, {"bucket": "b" * 63}).bucket == "b" * 63
    for bad in ("ab", "b" * 64, "My-Bucket", "my_bucket", "s3://bucket", "bucket/prefix"):
        assert error(cls, {"bucket": bad}) == (
            "bucket", f"invalid bucket name '{bad}': {S3_RULE}")
    assert error(cls, {}) == ("bucket", "required parameter is missing")


def test_aws_s3_region() -> None:
    assert ok(aws_outputs.S3Params, {"bucket": "abc"}).region == ""
    assert ok(aws_outputs.S3Params, {"bucket": "abc", "region": "eu-west-1"}).region \
        == "eu-west-1"
    assert problem(minio.MinioS3Params, {"bucket": "abc", "region": "eu-west-1"})[::2] == (
        "region", "warning")


def test_gcs_buckets() -> None:
    assert ok(gcp_outputs.GcsParams, {"bucket": "my_bucket"}).prefix == ""
    dotted = ".".join(["part"] * 40)
    assert ok(gcp_outputs.GcsParams, {"bucket": dotted}).bucket == dotted
    for bad in ("ab", "b" * 64, "My-Bucket", "gs://bucket"):
        assert error(gcp_outputs.GcsParams, {"bucket": bad}) == (
            "bucket", f"invalid bucket name '{bad}': expected 3 to 63 lowercase letters, "
                      f"digits, '.', '_' or '-' (up to 222 with dots)")
