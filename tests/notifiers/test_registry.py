"""Registration metadata of the notifiers and the shared text helpers.

Covers: all six notifiers registered (k8sevents with its RBAC rules), secrets
declared, frozen settings dataclasses, every `example` parses and validates, importing
the package loads no SDK; `normalise` conversions; `title_key`; the plaintext block.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from talon.models import Notification
from talon.notifiers import _text, normalise
from talon.notifiers.elasticsearch import ElasticsearchSettings
from talon.notifiers.smtp import SmtpSettings
from talon.params import coerce
from talon.registry import REGISTRY, Permission

NAMES = ("elasticsearch", "k8sevents", "loki", "slack", "smtp", "webhook")
SECRETS = {"slack": {"webhook_url"}, "smtp": {"password"}, "loki": {"api_key"},
           "elasticsearch": {"password"}, "webhook": {"url"}}


def test_all_registered() -> None:
    assert set(NAMES) <= set(REGISTRY.names("notifier"))


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name: str) -> None:
    plugin = REGISTRY.get("notifier", name)
    info = plugin.info
    assert info.description
    assert info.example.startswith(("notifiers:", "default_notifiers:"))
    assert SECRETS.get(name, set()) <= set(info.secrets)
    if name == "k8sevents":
        assert callable(plugin.run) and info.params is None
        assert info.requires == ("kubernetes",)
        assert info.permissions == (
            Permission(("",), ("events",), ("create",)),
            Permission(("",), ("pods",), ("get",)))
        return
    assert callable(plugin.run)
    params = info.params
    assert params is not None
    assert dataclasses.is_dataclass(params)
    assert params.__dataclass_params__.frozen  # type: ignore[attr-defined]
    section = yaml.safe_load(info.example)["notifiers"][name]
    settings, problems = coerce(params, normalise(params, section))
    assert settings is not None, problems
    assert problems == []
    assert set(info.secrets) <= {f.name for f in dataclasses.fields(params)}


def test_import_loads_no_sdk() -> None:
    code = ("import sys, talon.notifiers; "
            "bad = {'kubernetes', 'boto3', 'minio', 'google.cloud.storage'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_normalise_conversions() -> None:
    raw = {"URL": "http://es", "number_of_shards": " 2 ", "number_of_replicas": "0",
           "create_index_template": "No", "suffix": "Monthly",
           "custom_headers": {"X-N": 5, "X-B": True}, "user": 99999, "password": 1.5}
    out = normalise(ElasticsearchSettings, raw)
    assert out == {"url": "http://es", "number_of_shards": 2, "number_of_replicas": 0,
                   "create_index_template": False, "suffix": "monthly",
                   "custom_headers": {"X-N": "5", "X-B": "true"}, "user": "99999",
                   "password": "1.5"}
    settings, problems = coerce(ElasticsearchSettings, out)
    assert problems == []
    assert settings.number_of_replicas == 0


def test_normalise_leaves_bad_values_for_coerce() -> None:
    out = normalise(ElasticsearchSettings, {"url": "http://es", "number_of_shards": "three",
                                            "unknown": 1})
    assert out["number_of_shards"] == "three"
    _, problems = coerce(ElasticsearchSettings, out)
    assert {p.field for p in problems} == {"number_of_shards", "unknown"}


def test_normalise_alias_does_not_clobber() -> None:
    out = normalise(SmtpSettings, {"from": "a@b.c", "from_": "d@e.f"})
    assert out == {"from": "a@b.c", "from_": "d@e.f"}
    assert normalise(SmtpSettings, None) == {}


@pytest.mark.parametrize(("key", "shown"), [
    ("namespace", "Namespace"), ("NetworkPolicy", "Networkpolicy"), ("pod", "Pod"),
    ("function_response", "Function_response"), ("", ""),
])
def test_title_key(key: str, shown: str) -> None:
    assert _text.title_key(key) == shown


def test_plaintext_minimal() -> None:
    note = Notification(message="output", status="failure", trace_id="t1",
                        output_target="local:file", result="r", error="e")
    assert _text.plaintext(note) == (
        "Status: failure\nMessage: output\nError: e\nResult: r\n"
        "OutputTarget: local:file\nTrace ID: t1\n")
    assert _text.plaintext(note, trace_label="TraceID").endswith("TraceID: t1\n")
