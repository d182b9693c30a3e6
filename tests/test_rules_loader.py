"""Rules files: reading, merging and validation, with a test registry.

Covers: action blocks reused by rules (scalar: rule wins; list: block then rule; map:
merged, block wins on a shared key, with a warning; kind mismatch warned), later action
blocks and rules with the same name folded into the first (upstream's table, including
the flat list fix and the output parameters that used to crash it), directories read in
name order, `contexts` alias, booleans, every validation error naming file, rule, action,
field and line, all errors reported at once, --strict, unreferenced blocks warn only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from talon import rules
from talon.errors import Problem, RulesError
from talon.registry import Registry

Write = Callable[..., str]


def load(registry: Registry, *paths: str, strict: bool = False) -> rules.RuleSet:
    return rules.load(list(paths), registry, strict=strict)


def problems(registry: Registry, *paths: str, strict: bool = False) -> list[Problem]:
    return rules.check(list(paths), registry, strict=strict)[1]


def errors(registry: Registry, *paths: str) -> list[Problem]:
    return [p for p in problems(registry, *paths) if p.severity == "error"]


def test_rule_action_inherits_block(registry: Registry, write_rules: Write) -> None:
    path = write_rules("""
        - action: Label
          description: from block
          actionner: test:lists
          continue: false
          parameters:
            allow_cidr: ["10.0.0.0/8"]
            count: 1
        - rule: R
          match: {rules: [F]}
          actions:
            - action: Label
              parameters:
                allow_cidr: ["192.168.0.0/16"]
                count: 2
                allow_namespaces: [a]
        """)
    (rule,) = load(registry, path).rules
    (action,) = rule.actions
    assert action.actionner == "test:lists"
    assert action.description == "from block"
    assert action.continue_ is False and action.continues is False
    assert action.parameters["allow_cidr"] == ("10.0.0.0/8", "192.168.0.0/16")
    assert action.parameters["count"] == 2
    assert action.params.allow_namespaces == ("a",)


def test_map_merge_block_wins_and_warns(registry: Registry, write_rules: Write) -> None:
    path = write_rules("""
        - action: Label
          actionner: test:label
          parameters: {labels: {suspicious: "block", a: "1"}}
        - rule: R
          actions:
            - action: Label
              parameters: {labels: {suspicious: "rule", b: "2"}}
        """)
    ruleset, found = rules.check([path], registry)
    labels = dict(ruleset.rules[0].actions[0].parameters["labels"])
    assert labels == {"suspicious": "block", "a": "1", "b": "2"}
    (warn,) = [p for p in found if p.field == "parameters.labels.suspicious"]
    assert warn.severity == "warning" and warn.rule == "R" and warn.action == "Label"


def test_kind_mismatch_keeps_rule_value(registry: Registry, write_rules: Write) -> None:
    path = write_rules("""
        - action: A
          actionner: test:lists
          parameters: {allow_cidr: ["10.0.0.0/8"]}
        - rule: R
          actions:
            - action: A
              parameters: {count: 3, allow_namespaces: [x]}
        - rule: S
          actions:
            - action: A
              parameters: {allow_cidr: {a: b}}
        """)
    found = problems(registry, path)
    assert any("mismatch of type" in p.message and p.rule == "S" for p in found)


def test_later_action_block_folds_into_first(registry: Registry, write_rules: Write) -> None:
    first = write_rules("""
        - action: Block
          actionner: test:lists
          description: first
          parameters:
            allow_cidr: ["10.0.0.0/8"]
            count: 1
        - rule: R
          actions: [{action: Block}]
        """)
    second = write_rules("""
        - action: Block
          description: second
          continue: false
          parameters:
            allow_cidr: ["172.16.0.0/12"]
            allow_namespaces: ["ns"]
            count: 2
        """)
    (block,) = [a for a in load(registry, first, second).actions if a.name == "Block"]
    assert block.description == "second" and block.continue_ is False
    assert block.parameters["allow_cidr"] == ("10.0.0.0/8", "172.16.0.0/12")
    assert block.parameters["allow_namespaces"] == ("ns",)  # flat, not [[ns]]
    assert block.parameters["count"] == 2


def test_upstream_override_example(registry: Registry, write_rules: Write) -> None:
    base = write_rules("""
        - action: Capture logs
          actionner: test:logs
        - rule: Repro
          match: {rules: [Test]}
          actions: [{action: Capture logs}]
          notifiers: []
        """)
    override = write_rules("""
        - action: Capture logs
          output:
            target: local:file
            parameters: {destination: /tmp/base}
        """)
    (rule,) = load(registry, base, override).rules
    (action,) = rule.actions
    assert action.output is not None
    assert action.output.target == "local:file"
    assert action.output.parameters["destination"] == "/tmp/base"


def test_output_target_first_wins(registry: Registry, write_rules: Write) -> None:
    path = write_rules("""
        - action: C
          actionner: test:capture
          output: {target: local:file, parameters: {destination: /a}}
        - action: C
          output: {target: other:x, parameters: {destination: /b}}
        - rule: R
          actions: [{action: C}]
        """)
    (action,) = load(registry, path).rules[0].actions
    assert action.output is not None and action.output.target == "local:file"
    assert action.output.parameters["destination"] == "/b"


def test_block_output_list_params_merge_without_crash(registry: Registry,
                                                      write_rules: Write) -> None:
    path = write_rules("""
        - action: C
          actionner: test:capture
          output: {target: local:file, parameters: {destination: /a, extra: [1, 2]}}
        - rule: R
          actions: [{action: C}]
        """)
    (action,) = load(registry, path).rules[0].actions
    assert action.output is not None and action.output.parameters["extra"] == (1, 2)


def test_later_rule_appends_and_overrides(registry: Registry, write_rules: Write) -> None:
    a = write_rules("""
        - rule: R
          match: {rules: [F1], priority: ">=Warning", tags: [a], output_fields: ["x=1"]}
          notifiers: [webhook]
          actions: [{action: one, actionner: test:kill}]
        """)
    b = write_rules("""
        - rule: R
          continue: false
          description: later
          match: {rules: [F2], tags: [b], output_fields: ["y=2"]}
          actions: [{action: two, actionner: test:exec, parameters: {command: id}}]
        """)
    ruleset, found = rules.check([a, b], registry)
    (rule,) = ruleset.rules
    assert [x.name for x in rule.actions] == ["one", "two"]
    assert rule.actions[1].file == b and rule.actions[0].file == a
    assert rule.match.rules == ("F1", "F2") and rule.match.tags == ("a", "b")
    assert rule.match.output_fields == ("x=1", "y=2")
    assert rule.match.priority == ""  # cleared by the later definition, as upstream
    assert rule.continue_ is False and rule.description == "later"
    assert any(p.field == "match.priority" and p.severity == "warning" for p in found)


def test_directory_in_name_order(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "rules.d"
    folder.mkdir()
    (folder / "20-b.yaml").write_text("- rule: B\n  actions: [{action: x, actionner: test:kill}]\n")
    (folder / "10-a.yaml").write_text("- rule: A\n  actions: [{action: x, actionner: test:kill}]\n")
    (folder / "notes.txt").write_text("ignored")
    ruleset = load(registry, str(folder))
    assert [r.name for r in ruleset.rules] == ["A", "B"]
    assert [r.index for r in ruleset.rules] == [0, 1]


def test_contexts_alias_and_booleans(registry: Registry, write_rules: Write) -> None:
    path = write_rules("""
        - rule: R
          dry_run: "true"
          continue: False
          actions:
            - action: e
              actionner: test:exec
              contexts: [k8snode]
              ignore_errors: true
              parameters: {command: "echo ${NODE_HOSTNAME}"}
        """)
    (rule,) = load(registry, path).rules
    assert rule.dry_run is True and rule.continue_ is False
    assert rule.actions[0].additional_contexts == ("k8snode",)
    assert rule.actions[0].ignore_errors is True


def test_retries_come_from_the_action_block(registry: Registry, write_rules: Write) -> None:
    path = write_rules("""
        - action: kill
          actionner: test:kill
          retries: 3
          retry_backoff_seconds: 0.5
        - rule: R
          actions:
            - action: kill
            - {action: other, actionner: test:kill}
        """)
    (rule,) = load(registry, path).rules
    assert (rule.actions[0].retries, rule.actions[0].retry_backoff_seconds) == (3, 0.5)
    assert (rule.actions[1].retries, rule.actions[1].retry_backoff_seconds) == (0, 1.0)


@pytest.mark.parametrize(("text", "field", "message"), [
    ("- rule: R\n  actions: []\n", "actions", "no action specified"),
    ("- rule: R\n", "actions", "no action specified"),
    ("- rule: R\n  actions: [{action: a}]\n", "actionner", "missing actionner"),
    ("- rule: R\n  actions: [{action: a, actionner: test:nope}]\n", "actionner",
     "unknown actionner 'test:nope'"),
    ("- rule: R\n  actions: [{actionner: test:kill}]\n", "action", "action without a name"),
    ("- rule: R\n  continue: yes\n  actions: [{action: a, actionner: test:kill}]\n",
     "continue", "'continue' setting can be 'true' or 'false' only"),
    ("- rule: R\n  dry_run: 1\n  actions: [{action: a, actionner: test:kill}]\n",
     "dry_run", "'dry_run' setting"),
    ("- rule: R\n  actions: [{action: a, actionner: test:kill, ignore_errors: maybe}]\n",
     "ignore_errors", "'ignore_errors' setting"),
    ("- rule: R\n  actions: [{action: a, actionner: test:kill, retries: 1.5}]\n",
     "retries", "'retries' must be an integer from 0 to 100"),
    ("- rule: R\n  actions: [{action: a, actionner: test:kill, retries: -1}]\n",
     "retries", "'retries' must be an integer"),
    ("- rule: R\n  actions: [{action: a, actionner: test:kill, retry_backoff_seconds: x}]\n",
     "retry_backoff_seconds", "'retry_backoff_seconds' must be a number >= 0"),
    ("- rule: R\n  match: {priority: Info}\n  actions: [{action: a, actionner: test:kill}]\n",
     "match.priority", "incorrect priority 'Info'"),
    ("- rule: R\n  match: {tags: ['a,b.']}\n  actions: [{action: a, actionner: test:kill}]\n",
     "match.tags", "incorrect tag 'b.'"),
    ("- rule: R\n  match: {output_fields: [k8s.ns.name]}\n"
     "  actions: [{action: a, actionner: test:kill}]\n",
     "match.output_fields", "expected key=value"),
    ("- rule: R\n  actions: [{action: a, actionner: test:capture}]\n", "output",
     "an output is required"),
    ("- rule: R\n  actions: [{action: a, actionner: test:capture, output: {target: x:y, "
     "parameters: {a: b}}}]\n", "output.target", "unknown output target 'x:y'"),
    ("- rule: R\n  actions: [{action: a, actionner: test:capture, output: "
     "{target: local:file}}]\n", "output.parameters", "missing 'parameters' for the output"),
    ("- rule: R\n  actions: [{action: a, actionner: test:capture, output: {target: local:file,"
     " parameters: {destination: 3}}}]\n", "output.parameters.destination",
     "expected a string"),
    ("- rule: R\n  actions: [{action: a, actionner: test:label}]\n", "parameters.labels",
     "required parameter is missing"),
    ("- rule: R\n  actions: [{action: a, actionner: test:label, parameters: "
     "{labels: {s: true}}}]\n", "parameters.labels.s", 'quote it: "true"'),
    ("- rule: R\n  actions: [{action: a, actionner: test:lists, parameters: "
     "{count: five}}]\n", "parameters.count", "expected an integer"),
    ("- rule: R\n  notifiers: [pager]\n  actions: [{action: a, actionner: test:kill}]\n",
     "notifiers", "unknown notifier 'pager'"),
    ("- rule: R\n  actions: [{action: a, actionner: test:exec, parameters: {command: x}, "
     "additional_contexts: [gpu]}]\n", "additional_contexts", "unknown context 'gpu'"),
    ("- rule: R\n  description: [x]\n  actions: [{action: a, actionner: test:kill}]\n",
     "description", "expected a string"),
])
def test_validation_errors_are_located(registry: Registry, write_rules: Write, text: str,
                                       field: str, message: str) -> None:
    path = write_rules(text)
    found = errors(registry, path)
    assert found, "expected an error"
    hit = [p for p in found if p.field == field and message in p.message]
    assert hit, [str(p) for p in found]
    assert hit[0].file == path and hit[0].rule == "R"
    assert hit[0].line is not None
    assert path in str(hit[0]) and "rule 'R'" in str(hit[0])


def test_action_errors_name_the_action_and_its_line(registry: Registry,
                                                    write_rules: Write) -> None:
    path = write_rules("""
        - rule: R
          actions:
            - action: fine
              actionner: test:kill
            - action: broken
              actionner: test:nope
        """)
    (err,) = errors(registry, path)
    assert (err.rule, err.action, err.field, err.line) == ("R", "broken", "actionner", 6)


def test_all_errors_at_once(registry: Registry, write_rules: Write) -> None:
    a = write_rules("- rule: A\n  actions: []\n")
    b = write_rules("- rule: B\n  match: {priority: nope}\n  actions: [{action: x}]\n")
    with pytest.raises(RulesError) as info:
        load(registry, a, b)
    found = [p for p in info.value.problems if p.severity == "error"]
    assert {(p.rule, p.field) for p in found} == {
        ("A", "actions"), ("B", "match.priority"), ("B", "actionner")}


def test_yaml_error_names_file_and_line(registry: Registry, write_rules: Write) -> None:
    good = write_rules("- rule: valid\n  actions: [{action: a, actionner: test:kill}]\n")
    bad = write_rules("- rule: broken\n  description: [\n")
    (err,) = errors(registry, good, bad)
    assert err.file == bad and err.line is not None
    assert err.message.startswith("wrong syntax: ")


def test_missing_file_and_not_a_list(registry: Registry, write_rules: Write,
                                     tmp_path: Path) -> None:
    found = errors(registry, str(tmp_path / "absent.yaml"), write_rules("rule: x\n"))
    assert [p.message for p in found] == [
        "rules file not found", "a rules file must be a YAML list of items"]


def test_item_without_name_is_an_error(registry: Registry, write_rules: Write) -> None:
    (err,) = errors(registry, write_rules("- rulle: typo\n  actions: []\n"))
    assert "neither an 'action' nor a 'rule'" in err.message


def test_unknown_keys_warn_and_strict_makes_them_errors(registry: Registry,
                                                        write_rules: Write) -> None:
    path = write_rules("""
        - rule: R
          dryrun: true
          actions:
            - action: a
              actionner: test:lists
              parameters: {allow: ["10.0.0.0/8"]}
        """)
    found = problems(registry, path)
    assert all(p.severity == "warning" for p in found)
    fields = {p.field: p.message for p in found}
    assert "did you mean 'dry_run'" in fields["dryrun"]
    assert "did you mean 'allow_cidr'" in fields["parameters.allow"]
    load(registry, path)  # warnings alone do not fail
    with pytest.raises(RulesError):
        load(registry, path, strict=True)


def test_unreferenced_block_only_warns(registry: Registry, write_rules: Write) -> None:
    path = write_rules("""
        - action: Unused
          actionner: test:nope
        - rule: R
          actions: [{action: a, actionner: test:kill}]
        """)
    found = problems(registry, path)
    (p,) = found
    assert p.severity == "warning" and p.action == "Unused"


def test_ruleset_is_immutable(registry: Registry, write_rules: Write) -> None:
    ruleset = load(registry, write_rules(
        "- rule: R\n  actions: [{action: a, actionner: test:lists, "
        "parameters: {allow_cidr: [x]}}]\n"))
    with pytest.raises(AttributeError):
        ruleset.rules[0].name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ruleset.rules[0].actions[0].parameters["allow_cidr"] = ()  # type: ignore[index]


def test_empty_and_non_string_names_are_reported_once(registry: Registry,
                                                      write_rules: Write) -> None:
    path = write_rules('- rule: ""\n  actions: []\n- rule: 3\n  actions: []\n')
    found = errors(registry, path)
    assert [(p.line, p.field, p.message) for p in found] == [
        (1, "", "item has an empty name"),
        (3, "rule", "the name must be a string, got 3")]
