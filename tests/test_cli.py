"""End-to-end tests of the command line (`talon.cli.main` and `python -m talon`).

Behaviours covered:
- `rules check -r rules.d` exits 0; `check` is an alias of `rules check`;
- `-c` and `-r` are accepted before the verb, between `rules` and its action, and after it;
  `-r` is repeatable and takes folders (their *.yaml/*.yml in name order, later files win);
- the upstream example files check valid with exactly 2 warnings (`allow`, with a hint
  towards allow_cidr, and `force`), and are invalid with `--strict`;
- `rules print` emits one YAML document (`---` first) holding the merged rules, e.g. the
  override file's parameters folded into `Terminate Pod`; invalid rules and YAML syntax
  errors print nothing on stdout, the problems on stderr (as `rules check`), and exit 1;
- every kind of invalid rules file exits 1 and stderr names the file, rule and field
  (unknown actionner, bad parameter type, missing required parameter, bad priority, bad
  output target, YAML syntax error with its line, missing file); every problem is reported
  at once; an invalid configuration (unknown key, wrong type) exits 1 naming the key path;
- usage errors exit 2 (unknown verb, missing `rules` action, unknown flag, missing input),
  also as a real process;
- `rules test`: the shipped suite passes; a wrong expectation exits 1 with a unified diff;
  an event file prints the rule, the action and the final parameters (`${FD_NAME}` in a
  kubernetes:download `file` is substituted, a kubernetes:exec `command` is left as
  written); a non-matching event says so; a bad event file exits 1 naming the field;
- `actionners|outputs|notifiers|contexts list` print `--- name ---` blocks of parseable YAML,
  `actionners list` only actionners;
  `version` prints talon.__version__;
- `rbac` prints a ClusterRole covering the shipped rules;
- neither `rules check` nor `rules test` imports kubernetes, boto3, botocore, minio or
  google.cloud;
- rules files come from `-r`, else from the environment (RULES_FILES), else from the
  configuration's `rules_files`;
- without -c, `server`, `journal`, `containment` and `governor` read the default
  configuration file (cli.DEFAULT_CONFIG) when it exists: `journal list` finds the journal
  it names;
- a reader that closes stdout early does not turn into a traceback or a failure code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

import talon
from talon import cli, config

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = Path("tests/fixtures/upstream")
UPSTREAM_ARGS = ("-c", str(UPSTREAM / "config_example.yaml"), "-r", str(UPSTREAM / "rules.yaml"),
                 "-r", str(UPSTREAM / "rules_override.yaml"))
SHIPPED_SUITE = "tests/rules_d_suite.yaml"
HEAVY = ("kubernetes", "boto3", "botocore", "minio")

Run = Callable[..., tuple[int, str, str]]


def _config_env_names() -> set[str]:
    names = {env for _key, env, _default, _help in config.ENV_VARS if "<" not in env}
    names |= {"NAMESPACE", "OTEL_USE_INSECURE_GRPC", "AWS_ROLE_EXTERNAL_ID"}
    return names | {k for k in os.environ if k.startswith("NOTIFIERS_")}


def _clean_env() -> dict[str, str]:
    drop = _config_env_names()
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths resolve from the project root; no Talon setting leaks from the shell."""
    monkeypatch.chdir(ROOT)
    for name in _config_env_names():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run `talon.cli.main(argv)` in-process: (exit code, stdout, stderr)."""

    def call(*argv: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return call


def run_process(*argv: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m talon ARGV` (or `python -c CODE`) from the project root."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "talon", *argv]
    return subprocess.run(cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True,
                          timeout=60, check=False)


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def label_rule(name: str, falco_rule: str, label: str = "seen") -> str:
    return textwrap.dedent(f"""\
        - rule: {name}
          match:
            rules: [{falco_rule}]
          actions:
            - action: Label {name}
              actionner: kubernetes:label
              parameters:
                labels: {{talon.example/{label}: "true"}}
        """)


@pytest.fixture
def two_rules(tmp_path: Path) -> str:
    return write(tmp_path / "two.yaml", label_rule("One", "A") + label_rule("Two", "B"))


def printed_rules(out: str) -> dict[str, dict[str, Any]]:
    assert out.startswith("---\n")
    data = yaml.safe_load(out)
    assert isinstance(data, list)
    return {rule["rule"]: rule for rule in data}


def list_blocks(out: str) -> dict[str, Any]:
    """`--- name ---` blocks of a `* list` command, each body parsed as YAML."""
    parts = re.split(r"^--- (.*) ---$", out, flags=re.MULTILINE)
    assert parts[0].strip() == ""
    names, bodies = parts[1::2], parts[2::2]
    assert len(names) == len(set(names)), "a plug-in is listed twice"
    return {name: yaml.safe_load(body) for name, body in zip(names, bodies, strict=True)}


def problem_lines(err: str, severity: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"{severity}: ")]


# --- rules check: verbs, flags, files --------------------------------------------------------


def test_rules_check_shipped_rules_is_valid(run: Run) -> None:
    code, out, err = run("rules", "check", "-r", "rules.d")
    assert code == 0, err
    assert out.startswith("rules file valid: ")
    assert "0 warning(s)" in out
    assert err == ""


def test_check_is_an_alias_of_rules_check(run: Run) -> None:
    assert run("check", "-r", "rules.d")[:2] == run("rules", "check", "-r", "rules.d")[:2]


@pytest.mark.parametrize("argv", [
    ("-r", "{rules}", "rules", "check"),
    ("rules", "-r", "{rules}", "check"),
    ("rules", "check", "-r", "{rules}"),
    ("-r", "{rules}", "check"),
    ("check", "-r", "{rules}"),
], ids=" ".join)
def test_rules_flag_before_or_after_the_verb(run: Run, two_rules: str,
                                             argv: Sequence[str]) -> None:
    code, out, err = run(*(a.format(rules=two_rules) for a in argv))
    assert code == 0, err
    assert out == "rules file valid: 2 rules from 1 file(s), 0 warning(s)\n"


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_flag_before_or_after_the_verb(run: Run, tmp_path: Path, where: str) -> None:
    cfg = write(tmp_path / "config.yaml", "listen_prot: 1\n")
    argv = (["-c", cfg, "rules", "check", "-r", "rules.d"] if where == "before"
            else ["rules", "check", "-r", "rules.d", "-c", cfg])
    code, out, err = run(*argv)
    assert code == 1
    assert out == ""
    assert "listen_prot" in err


def test_rules_flags_before_and_after_the_verb_add_up(run: Run, tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", label_rule("One", "A"))
    second = write(tmp_path / "b.yaml", label_rule("Two", "B"))
    third = write(tmp_path / "c.yaml", label_rule("Three", "C"))
    code, out, _ = run("-r", first, "rules", "-r", second, "check", "-r", third)
    assert code == 0
    assert "3 rules from 3 file(s)" in out


def test_rules_flag_repeated_with_a_folder(run: Run, tmp_path: Path) -> None:
    folder = tmp_path / "rules.d"
    write(folder / "10-base.yaml", label_rule("One", "A", label="base"))
    write(folder / "20-more.yml", label_rule("Two", "B"))
    write(folder / "notes.txt", "not rules: ignored\n")
    override = write(tmp_path / "override.yaml", """\
        - action: Label One
          parameters:
            labels: {talon.example/override: "true"}
        """)
    code, out, err = run("rules", "check", "-r", str(folder), "-r", override)
    assert code == 0, err
    assert out == "rules file valid: 2 rules from 3 file(s), 0 warning(s)\n"
    code, out, _ = run("rules", "print", "-r", str(folder), "-r", override)
    assert code == 0
    rules = printed_rules(out)
    assert list(rules) == ["One", "Two"]
    labels = rules["One"]["actions"][0]["parameters"]["labels"]
    assert labels == {"talon.example/base": "true", "talon.example/override": "true"}


def test_missing_rules_file_is_an_error(run: Run, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    code, out, err = run("rules", "check", "-r", missing)
    assert code == 1
    assert out == ""
    assert f"error: {missing}: rules file not found" in err


# --- the upstream example files ----------------------------------------------------------------


def test_upstream_examples_check_with_four_warnings(run: Run) -> None:
    code, out, err = run("rules", "check", *UPSTREAM_ARGS)
    assert code == 0, err
    assert "4 warning(s)" in out
    warnings = problem_lines(err, "warning")
    images = [line for line in warnings if "not pinned by digest" in line]
    assert len(images) == 2, err  # the tcpdump and sysdig actions keep the default tags
    assert all("field 'parameters.image'" in line for line in images)
    warnings = [line for line in warnings if line not in images]
    assert len(warnings) == 2, err
    assert problem_lines(err, "error") == []
    allow, force = sorted(warnings, key=lambda line: "force" in line)
    assert "rule 'Calico netpol'" in allow
    assert "field 'parameters.allow'" in allow
    assert "did you mean 'allow_cidr'" in allow
    assert "rule 'Test node drain'" in force
    assert "field 'parameters.force'" in force


def test_upstream_examples_are_invalid_with_strict(run: Run) -> None:
    code, out, err = run("rules", "check", "--strict", *UPSTREAM_ARGS)
    assert code == 1
    assert out == ""
    errors = problem_lines(err, "error")
    assert len(errors) == 4
    assert any("parameters.allow" in line for line in errors)
    assert any("parameters.force" in line for line in errors)
    assert sum("parameters.image" in line for line in errors) == 2
    assert "invalid rules: 4 error(s)" in err


def test_rules_print_shows_the_merged_upstream_rules(run: Run) -> None:
    code, out, err = run("rules", "print", *UPSTREAM_ARGS)
    assert code == 0, err
    rules = printed_rules(out)
    (terminate,) = rules["Terminal shell in container"]["actions"]
    assert terminate["action"] == "Terminate Pod"
    assert terminate["actionner"] == "kubernetes:terminate"
    params = terminate["parameters"]
    assert params["grace_period_seconds"] == 2
    assert params["ignore_standalone_pods"] is True
    assert params["ignore_daemonsets"] is True
    assert params["ignore_statefulsets"] is True
    first = rules["Calico netpol"]["actions"][0]
    assert first["action"] == "Disable outbound connections"
    assert first["parameters"]["allow_cidr"] == ["192.168.1.0/24", "172.17.0.0/16"]
    assert first["parameters"]["allow_namespaces"] == ["green-ns", "blue-ns"]
    assert rules["Test download"]["actions"][2]["output"]["target"] == "minio:s3"


def test_rules_print_with_invalid_rules_exits_1(run: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", """\
        - rule: Odd
          match: {rules: [A]}
          actions:
            - action: Mystery
              actionner: kubernetes:mystery
        """)
    code, out, err = run("rules", "print", "-r", path)
    assert code == 1
    assert out == ""
    (line,) = problem_lines(err, "error")
    assert "unknown actionner 'kubernetes:mystery'" in line
    assert f"{path}:" in line and "rule 'Odd'" in line
    assert "invalid rules: 1 error(s)" in err


def test_rules_print_with_a_yaml_syntax_error_exits_1(run: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", "- rule: R\n  match: [\n")
    code, out, err = run("rules", "print", "-r", path)
    assert code == 1
    assert out == ""
    (line,) = problem_lines(err, "error")
    assert line.startswith(f"error: {path}:")
    assert "wrong syntax" in line


# --- invalid rules and configuration ---------------------------------------------------------


INVALID_RULES = {
    "unknown actionner": ("""\
        - rule: R1
          match: {rules: [A]}
          actions:
            - action: Act
              actionner: kubernetes:nope
        """, "R1", "actionner", "unknown actionner 'kubernetes:nope'"),
    "bad parameter type": ("""\
        - rule: R2
          match: {rules: [A]}
          actions:
            - action: Act
              actionner: kubernetes:terminate
              parameters: {grace_period_seconds: soon}
        """, "R2", "parameters.grace_period_seconds", "integer"),
    "missing required parameter": ("""\
        - rule: R3
          match: {rules: [A]}
          actions:
            - action: Act
              actionner: kubernetes:label
        """, "R3", "parameters.labels", "required"),
    "bad priority": ("""\
        - rule: R4
          match: {rules: [A], priority: ">=Loud"}
          actions:
            - action: Act
              actionner: kubernetes:label
              parameters: {labels: {a: b}}
        """, "R4", "match.priority", "incorrect priority '>=Loud'"),
    "bad output target": ("""\
        - rule: R5
          match: {rules: [A]}
          actions:
            - action: Act
              actionner: kubernetes:log
              output:
                target: dropbox:files
                parameters: {bucket: b}
        """, "R5", "output.target", "unknown output target 'dropbox:files'"),
}


@pytest.mark.parametrize("case", list(INVALID_RULES))
def test_invalid_rules_name_file_rule_and_field(run: Run, tmp_path: Path, case: str) -> None:
    text, rule, field, message = INVALID_RULES[case]
    path = write(tmp_path / "bad.yaml", text)
    code, out, err = run("rules", "check", "-r", path)
    assert code == 1
    assert out == ""
    (line,) = problem_lines(err, "error")
    assert line.startswith(f"error: {path}:")
    assert f"rule '{rule}'" in line
    assert f"field '{field}'" in line
    assert message in line
    assert "invalid rules: 1 error(s)" in err


def test_yaml_syntax_error_names_file_and_line(run: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", """\
        - rule: R6
          match:
            rules: [A]
          actions:
            - action: Act
              actionner: kubernetes:label
             parameters: {}
        """)
    code, out, err = run("rules", "check", "-r", path)
    assert code == 1
    assert out == ""
    (line,) = problem_lines(err, "error")
    assert line.startswith(f"error: {path}:7: ")


def test_every_problem_is_reported_at_once(run: Run, tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", INVALID_RULES["unknown actionner"][0])
    second = write(tmp_path / "b.yaml", INVALID_RULES["bad priority"][0])
    code, _, err = run("rules", "check", "-r", first, "-r", second)
    assert code == 1
    errors = problem_lines(err, "error")
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {first}:")
    assert errors[1].startswith(f"error: {second}:")


@pytest.mark.parametrize(("text", "key", "message"), [
    ("listen_port: 2803\nlisten_prot: 1\n", "listen_prot", "did you mean 'listen_port'"),
    ("otel:\n  collector_port: abc\n", "otel.collector_port", "expected integer"),
    ("deduplication:\n  time_window_seconds: [1]\n", "deduplication.time_window_seconds",
     "expected integer"),
], ids=["unknown key", "wrong type", "wrong type in section"])
def test_invalid_config_names_the_key_path(run: Run, tmp_path: Path, text: str, key: str,
                                           message: str) -> None:
    cfg = write(tmp_path / "config.yaml", text)
    code, out, err = run("rules", "check", "-c", cfg, "-r", "rules.d")
    assert code == 1
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"config error: {cfg}:")
    assert f" {key}: " in line
    assert message in line


# --- usage errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ("frobnicate",),
    ("rules",),
    ("rules", "check", "--frob", "-r", "rules.d"),
    ("rules", "test", "-r", "rules.d"),
    ("actionners",),
    (),
], ids=["unknown verb", "rules without action", "unknown flag", "test without input",
        "list without list", "nothing"])
def test_usage_errors_exit_2(run: Run, argv: Sequence[str]) -> None:
    code, out, err = run(*argv)
    assert code == 2
    assert out == ""
    assert "usage: talon" in err


def test_usage_error_exit_code_of_the_process() -> None:
    proc = run_process("rules", "frobnicate")
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_process_exit_codes_for_valid_and_invalid_rules(tmp_path: Path) -> None:
    ok = run_process("rules", "check", "-r", "rules.d")
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout.startswith("rules file valid: ")
    bad = write(tmp_path / "bad.yaml", INVALID_RULES["unknown actionner"][0])
    failed = run_process("check", "-r", bad)
    assert failed.returncode == 1
    assert "unknown actionner" in failed.stderr
    assert "Traceback" not in failed.stderr


# --- rules test ----------------------------------------------------------------------------------


def test_shipped_suite_passes(run: Run) -> None:
    code, out, err = run("rules", "test", "-r", "rules.d", SHIPPED_SUITE)
    assert code == 0, out + err
    assert out.splitlines()[-1] == "5 passed, 0 failed"
    assert "FAIL" not in out


def test_wrong_expectation_prints_a_unified_diff(run: Run, tmp_path: Path) -> None:
    shell = ROOT / "tests/fixtures/events/falco_shell.json"
    suite_file = write(tmp_path / "suite.yaml", f"""\
        tests:
          - name: right
            event_file: {shell}
            expect: {{actions: [Label Pod as Suspicious]}}
          - name: wrong
            event_file: {shell}
            expect: {{actions: [Isolate Pod]}}
        """)
    code, out, _ = run("rules", "test", "-r", "rules.d", suite_file)
    assert code == 1
    lines = [line.strip() for line in out.splitlines()]
    assert f"FAIL: {suite_file}: wrong" in lines
    assert f"ok: {suite_file}: right" in lines
    start = lines.index("--- expected")
    assert lines[start + 1] == "+++ actual"
    assert "-- Isolate Pod" in lines[start:]
    assert "+- Label Pod as Suspicious" in lines[start:]
    assert lines[-1] == "1 passed, 1 failed"


DOWNLOAD_RULES = """\
    - rule: Grab the file
      match:
        rules: [Read sensitive file untrusted]
      actions:
        - action: Fetch it
          actionner: kubernetes:download
          parameters:
            file: "${FD_NAME}"
          output:
            target: local:file
            parameters: {destination: /tmp/talon}
        - action: Show it
          actionner: kubernetes:exec
          parameters:
            command: "cat ${FD_NAME}"
    """

SENSITIVE_EVENT = """\
    {"rule": "Read sensitive file untrusted", "priority": "Warning", "source": "syscall",
     "output": "12:00:00.000000000: Warning Sensitive file opened",
     "time": "2024-01-03T02:13:42.750111000Z",
     "output_fields": {"fd.name": "/etc/shadow", "k8s.ns.name": "shop",
                       "k8s.pod.name": "web-1"}}
    """


def test_event_file_prints_rule_action_and_final_parameters(run: Run, tmp_path: Path) -> None:
    rules_file = write(tmp_path / "rules.yaml", DOWNLOAD_RULES)
    event = write(tmp_path / "event.json", SENSITIVE_EVENT)
    code, out, err = run("rules", "test", "-r", rules_file, event)
    assert code == 0, err
    header = out.splitlines()[0]
    assert header == (f"# {event}: Falco rule 'Read sensitive file untrusted', "
                      "priority 'Warning'")
    download, exec_ = yaml.safe_load(out)
    assert download["rule"] == "Grab the file"
    assert download["action"] == "Fetch it"
    assert download["actionner"] == "kubernetes:download"
    assert download["parameters"] == {"file": "/etc/shadow"}
    assert download["output"] == {"target": "local:file",
                                  "parameters": {"destination": "/tmp/talon"}}
    assert exec_["action"] == "Show it"
    # shell actionners get event values as environment variables, never pasted in
    assert exec_["parameters"] == {"command": "cat ${FD_NAME}"}


def test_event_file_and_suite_together(run: Run, tmp_path: Path) -> None:
    event = write(tmp_path / "other.json", SENSITIVE_EVENT.replace(
        "Read sensitive file untrusted", "Something else"))
    code, out, _ = run("rules", "test", "-r", "rules.d", event, SHIPPED_SUITE)
    assert code == 0
    assert "no rule matches" in out
    assert out.splitlines()[-1] == "5 passed, 0 failed"


@pytest.mark.parametrize(("body", "field"), [
    ('{"rule": 5, "priority": "Warning", "output_fields": {}}', "rule"),
    ('{"rule": "x", "priority": "Warning", "output_fields": []}', "output_fields"),
    ("not json", "invalid JSON"),
], ids=["rule not a string", "output_fields not a map", "not JSON"])
def test_bad_event_file_exits_1_naming_the_field(run: Run, tmp_path: Path, body: str,
                                                 field: str) -> None:
    event = write(tmp_path / "bad.json", body)
    code, out, err = run("rules", "test", "-r", "rules.d", event)
    assert code == 1
    assert out == ""
    assert err.startswith(f"{event}: {field}")


def test_missing_event_file_exits_1(run: Run, tmp_path: Path) -> None:
    missing = str(tmp_path / "none.json")
    code, _, err = run("rules", "test", "-r", "rules.d", missing)
    assert code == 1
    assert missing in err


def test_rules_test_with_invalid_rules_exits_1(run: Run, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", INVALID_RULES["bad output target"][0])
    code, out, err = run("rules", "test", "-r", bad, SHIPPED_SUITE)
    assert code == 1
    assert "passed" not in out
    assert "unknown output target" in err


# --- listings, version, rbac ------------------------------------------------------------------


def test_actionners_list(run: Run) -> None:
    code, out, err = run("actionners", "list")
    assert code == 0, err
    blocks = list_blocks(out)
    assert "--- kubernetes:terminate ---" in out.splitlines()
    terminate = blocks["kubernetes:terminate"]
    assert terminate["continue"] is False
    assert terminate["required_output_fields"] == ["k8s.pod.name", "k8s.ns.name"]
    assert "grace_period_seconds" in terminate["parameters"]
    for name, body in blocks.items():
        assert isinstance(body, dict), name
        assert name.split(":")[-1] == body["name"], name
    assert not {"aws", "k8snode"} & set(blocks), "contexts are listed by `contexts list`"
    assert all(":" in name for name in blocks)


def test_contexts_list(run: Run) -> None:
    code, out, err = run("contexts", "list")
    assert code == 0, err
    blocks = list_blocks(out)
    assert set(blocks) == {"aws", "k8snode"}
    assert blocks["k8snode"]["name"] == "k8snode"
    assert "permissions" in blocks["k8snode"]


def test_outputs_list(run: Run) -> None:
    code, out, _ = run("outputs", "list")
    assert code == 0
    blocks = list_blocks(out)
    assert {"local:file", "aws:s3", "minio:s3", "gcp:gcs"} <= set(blocks)
    assert blocks["local:file"]["category"] == "local"


def test_notifiers_list(run: Run) -> None:
    code, out, _ = run("notifiers", "list")
    assert code == 0
    assert "--- slack ---" in out.splitlines()
    assert "---  ---" not in out
    blocks = list_blocks(out)
    assert all(name.strip() for name in blocks)
    assert blocks["slack"]["name"] == "slack"


def test_list_accepts_flags_after_the_action(run: Run) -> None:
    assert run("notifiers", "list", "-r", "rules.d")[:2] == run("notifiers", "list")[:2]


def test_version(run: Run) -> None:
    code, out, _ = run("version")
    assert code == 0
    assert out.splitlines()[0] == f"Version:\t{talon.__version__}"


def _rbac_rules(out: str) -> Iterator[dict[str, Any]]:
    role = next(yaml.safe_load_all(out))
    assert role["kind"] == "ClusterRole"
    assert role["apiVersion"] == "rbac.authorization.k8s.io/v1"
    yield from role["rules"]


def test_rbac_for_the_shipped_rules(run: Run) -> None:
    code, out, err = run("rbac", "-r", "rules.d")
    assert code == 0, err
    rules = list(_rbac_rules(out))
    assert any(r["apiGroups"] == [""] and "pods" in r["resources"] and "patch" in r["verbs"]
               for r in rules)
    assert any(r["apiGroups"] == ["networking.k8s.io"] and "networkpolicies" in r["resources"]
               and "create" in r["verbs"] for r in rules)
    assert not any("delete" in r["verbs"] for r in rules), "shipped rules delete nothing"


def test_rbac_adds_the_lease_role_when_dedup_can_span_replicas(run: Run,
                                                                 tmp_path: Path) -> None:
    code, out, err = run("rbac", "-r", "rules.d")
    assert code == 0, err
    _cluster_role, role = yaml.safe_load_all(out)
    assert role["kind"] == "Role"
    assert "namespace" not in role["metadata"]          # for kubectl apply -n NAMESPACE
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update", "delete", "list"]}]
    cfg = write(tmp_path / "c.yaml", "deduplication: {lease_namespace: falco}\n")
    _cluster_role, role = yaml.safe_load_all(run("rbac", "-r", "rules.d", "-c", cfg)[1])
    assert role["metadata"]["namespace"] == "falco"
    for section in ("{leader_election: false}", "{time_window_seconds: 0}"):
        cfg = write(tmp_path / "c.yaml", f"deduplication: {section}\n")
        assert len(list(yaml.safe_load_all(run("rbac", "-r", "rules.d", "-c", cfg)[1]))) == 1


def test_rbac_lists_the_cloud_permissions_of_the_plugins_used(run: Run,
                                                               tmp_path: Path) -> None:
    rules = write(tmp_path / "r.yaml", textwrap.dedent("""\
        - rule: R
          match: {rules: [F]}
          actions:
            - action: Call
              actionner: aws:lambda
              parameters: {aws_lambda_name: f}
            - action: Grab
              actionner: kubernetes:download
              parameters: {file: /etc/passwd}
              output: {target: gcp:gcs, parameters: {bucket: evidence}}
        """))
    code, out, err = run("rbac", "-r", rules)
    assert code == 0, err
    assert len(list(yaml.safe_load_all(out))) == 2       # the comments keep it appliable
    cloud = out[out.index("# --- cloud permissions"):]
    assert "# aws:lambda (actionner) needs" in cloud and "lambda:InvokeFunction" in cloud
    assert "# gcp:gcs (output) needs" in cloud and "storage.objects.create" in cloud
    assert "gcp:function" not in cloud and "s3:PutObject" not in cloud
    assert "cloud permissions" not in run("rbac", "-r", "rules.d")[1]


def test_rbac_with_invalid_rules_exits_1(run: Run, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", INVALID_RULES["unknown actionner"][0])
    code, out, _ = run("rbac", "-r", bad)
    assert (code, out) == (1, "")


# --- process behaviour ---------------------------------------------------------------------------

_IMPORTS_PROBE = """\
import sys
from talon import cli
code = cli.main({argv!r})
heavy = sorted(m for m in sys.modules
               if m.split('.')[0] in {heavy!r} or m.startswith('google.cloud'))
print(code, heavy)
"""


@pytest.mark.parametrize("argv", [
    ["rules", "check", "-r", "rules.d"],
    ["rules", "test", "-r", "rules.d", SHIPPED_SUITE],
], ids=["check", "test"])
def test_check_and_test_import_no_cloud_sdk(argv: list[str]) -> None:
    proc = run_process(code=_IMPORTS_PROBE.format(argv=argv, heavy=HEAVY))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "0 []"


@pytest.mark.parametrize("argv", [("actionners", "list"), ("rules", "print", *UPSTREAM_ARGS)],
                         ids=["list", "print"])
def test_closed_stdout_is_not_an_error(argv: Sequence[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "talon", *argv], cwd=ROOT,
                              env=_clean_env(), stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, check=False)
    finally:
        os.close(write_end)
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr


# --- where the rules come from -------------------------------------------------------------------


def test_rules_files_precedence(run: Run, monkeypatch: pytest.MonkeyPatch,
                                tmp_path: Path) -> None:
    from_config = tmp_path / "from-config"
    write(from_config / "rules.yaml", label_rule("From config", "A"))
    from_env = write(tmp_path / "env.yaml", label_rule("From env", "A"))
    from_flag = write(tmp_path / "flag.yaml", label_rule("From flag", "A"))
    cfg = write(tmp_path / "config.yaml", f"rules_files: [{from_config}]\n")

    def printed(*argv: str) -> list[str]:
        code, out, err = run("rules", "print", "-c", cfg, *argv)
        assert code == 0, err
        return list(printed_rules(out))

    assert printed() == ["From config"]
    assert printed("-r", from_flag) == ["From flag"]
    monkeypatch.setenv("RULES_FILES", from_env)
    assert printed() == ["From env"]
    assert printed("-r", from_flag) == ["From flag"]


def test_rules_files_from_config_are_checked(run: Run, tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    write(folder / "bad.yaml", INVALID_RULES["bad priority"][0])
    cfg = write(tmp_path / "config.yaml", f"rules_files: [{folder}]\n")
    code, _, err = run("check", "-c", cfg)
    assert code == 1
    assert f"{folder / 'bad.yaml'}:" in err
    code, out, _ = run("check", "-c", cfg, "-r", "rules.d")
    assert code == 0
    assert out.startswith("rules file valid")


def test_journal_verbs_read_the_default_config(run: Run, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    from talon import journal

    path = tmp_path / "journal.db"
    journal.Store(str(path)).close()
    cfg = write(tmp_path / "config.yaml", f'journal: {{path: "{path}"}}\n')
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", cfg)
    code, out, err = run("journal", "list")
    assert code == 0, err
    assert out.split() == ["ID", "STATE", "ACCEPTED", "DONE", "RULE"]
    assert set(cli.SERVER_CONFIG_VERBS) == {"server", "journal", "containment", "governor"}
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(tmp_path / "absent.yaml"))
    code, _, err = run("journal", "list")
    assert code == 1
    assert "no journal" in err
