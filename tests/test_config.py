"""Tests of talon.config: loading Settings from file, environment and overrides.

Behaviours covered:
- defaults with no file and an empty environment (print_all_events is False, as upstream's code);
- the upstream config_example.yaml loads unchanged (string port, otel, notifiers, `footer: ""`);
- precedence file < env < overrides for scalar, nested and list keys;
- type errors name the dotted key (file, with file:line) or the variable (env);
- numeric strings for ints and floats; booleans (true/false; 1/0/yes/no from env only);
- lists from YAML lists or comma-separated strings (env items stripped);
- unknown keys are errors with the nearest key suggested (file and overrides);
- keys match case-insensitively, map data inside notifiers keeps its case;
- NOTIFIERS_<NAME>_<SETTING> env vars, honoured without a file entry;
- aliases: otel.use_insecure_grpc, OTEL_USE_INSECURE_GRPC, AWS_ROLE_EXTERNAL_ID, NAMESPACE;
- ranges, log_format choices, deduplication.key forms, duplicate keys;
- missing file, required file, YAML syntax error with file and line;
- every problem from every source is reported at once;
- immutability of Settings, sections and notifier maps;
- secrets() and redacted(), and the ENV_VARS table.
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
from pathlib import Path

import pytest

from talon import config
from talon.errors import ConfigError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
UPSTREAM_EXAMPLE = FIXTURES / "upstream" / "config_example.yaml"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def problems_of(excinfo: pytest.ExceptionInfo[ConfigError]) -> tuple[str, ...]:
    return excinfo.value.problems


# --- defaults and the upstream example -----------------------------------------------------------


def test_defaults_without_file() -> None:
    s = config.load(None, env={})
    assert s.listen_address == "0.0.0.0"
    assert s.listen_port == 2803
    assert s.rules_files == ()
    assert s.watch_rules is True
    assert s.print_all_events is False
    assert s.log_format == "color"
    assert s.dry_run is False
    assert (s.workers, s.queue_size, s.max_body_bytes) == (8, 1000, 1048576)
    assert s.read_timeout_seconds == 10.0
    assert s.reload_interval_seconds == 1.0
    assert s.otel == config.OtelSettings()
    assert s.otel.collector_port == 4317
    assert s.otel.collector_endpoint == "localhost"
    assert s.deduplication.leader_election is True
    assert s.deduplication.time_window_seconds == 5
    assert s.deduplication.lease_name == "falco-talon"
    assert s.deduplication.max_entries == 100000
    assert dict(s.notifiers) == {}
    assert s.aws.region == ""
    assert s.minio.use_ssl is False


def test_upstream_example_loads(tmp_path: Path) -> None:
    s = config.load(str(UPSTREAM_EXAMPLE), env={})
    assert s.listen_port == 2803
    assert s.rules_files == ("./rules.yaml",)
    assert s.print_all_events is True
    assert s.otel.traces_enabled is True
    assert s.otel.metrics_enabled is True
    assert s.otel.collector_use_insecure_grpc is True
    assert s.otel.timeout == 10
    assert s.default_notifiers == ("k8sevents",)
    slack = s.notifiers["slack"]
    assert slack["webhook_url"] == "https://hooks.slack.com/services/XXXX"
    assert slack["footer"] == ""
    assert slack["format"] == "long"
    assert "icon" not in slack


def test_fixture_is_an_unchanged_copy_when_reference_available() -> None:
    reference = Path("/work/shared/reference/upstream-examples/config_example.yaml")
    if not reference.exists():
        pytest.skip("reference tree not available")
    assert UPSTREAM_EXAMPLE.read_bytes() == reference.read_bytes()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, ""), env={}) == config.load(None, env={})


def test_commented_out_sections_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "aws:\n  # role_arn: x\nnotifiers:\n  k8sevents:\n")
    s = config.load(path, env={})
    assert s.aws == config.AwsSettings()
    assert dict(s.notifiers["k8sevents"]) == {}


# --- precedence ----------------------------------------------------------------------------------


def test_precedence_file_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        listen_port: 1000
        log_format: text
        rules_files: [from-file.yaml]
        deduplication:
          time_window_seconds: 7
        otel:
          collector_endpoint: file-host
    """)
    env = {"LISTEN_PORT": "2000", "RULES_FILES": "env1.yaml, env2.yaml",
           "DEDUPLICATION_TIME_WINDOW_SECONDS": "8", "OTEL_COLLECTOR_ENDPOINT": "env-host"}
    overrides = {"listen_port": 3000, "rules_files": ["cli.yaml"],
                 "deduplication.time_window_seconds": 9}
    s = config.load(path, env=env, overrides=overrides)
    assert s.listen_port == 3000
    assert s.rules_files == ("cli.yaml",)
    assert s.deduplication.time_window_seconds == 9
    assert s.otel.collector_endpoint == "env-host"   # env beats file
    assert s.log_format == "text"                    # file beats default

    s = config.load(path, env=env)
    assert s.listen_port == 2000
    assert s.rules_files == ("env1.yaml", "env2.yaml")
    assert s.deduplication.time_window_seconds == 8


def test_none_override_means_flag_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, "dry_run: true\n")
    s = config.load(path, env={}, overrides={"dry_run": None, "listen_port": None})
    assert s.dry_run is True
    assert s.listen_port == 2803


def test_overrides_are_validated() -> None:
    with pytest.raises(ConfigError) as excinfo:
        config.load(None, env={}, overrides={"listen_port": 70000, "dryrun": True})
    text = str(excinfo.value)
    assert "listen_port (command line): must be between 0 and 65535, got 70000" in text
    assert "dryrun (command line): unknown key (did you mean 'dry_run'?)" in text


def test_empty_env_value_counts_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "listen_port: 1234\n")
    assert config.load(path, env={"LISTEN_PORT": "", "WATCH_RULES": " "}).listen_port == 1234


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PORT", "4321")
    assert config.load(None).listen_port == 4321


# --- types ---------------------------------------------------------------------------------------


def test_numeric_strings_and_floats(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        listen_port: "2803"
        read_timeout_seconds: "2.5"
        idle_timeout_seconds: 3
        workers: 4.0
    """)
    s = config.load(path, env={"ACTION_TIMEOUT_SECONDS": "1e2"})
    assert s.listen_port == 2803
    assert s.read_timeout_seconds == 2.5
    assert isinstance(s.idle_timeout_seconds, float)
    assert s.idle_timeout_seconds == 3.0
    assert s.workers == 4
    assert s.action_timeout_seconds == 100.0


def test_type_error_in_file_names_dotted_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "listen_port: 1\ndeduplication:\n  time_window_seconds: five\n")
    with pytest.raises(ConfigError) as excinfo:
        config.load(path, env={})
    assert problems_of(excinfo) == (
        f"{path}:3: deduplication.time_window_seconds: expected integer, got 'five'",)


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ("listen_port: abc", "listen_port: expected integer, got 'abc'"),
    ("listen_port: true", "listen_port: expected integer, got True"),
    ("workers: 2.5", "workers: expected integer, got 2.5"),
    ("read_timeout_seconds: soon", "read_timeout_seconds: expected number, got 'soon'"),
    ("read_timeout_seconds: .nan", "read_timeout_seconds: expected number, got nan"),
    ("dry_run: yes", "dry_run: expected boolean (true/false), got 'yes'"),
    ("dry_run: 1", "dry_run: expected boolean (true/false), got 1"),
    ("kubeconfig: [a, b]", "kubeconfig: expected string, got a list"),
    ("rules_files: {a: 1}", "rules_files: expected a list or a comma-separated string, got a map"),
    ("rules_files: [a, [b]]", "rules_files: item 1: expected string, got a list"),
    ("otel: 3", "otel: expected a map, got 3"),
    ("notifiers: [slack]", "notifiers: expected a map of notifiers, got a list"),
    ("notifiers: {slack: text}", "notifiers.slack: expected a map of settings, got 'text'"),
])
def test_file_type_errors(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = write(tmp_path, yaml_text + "\n")
    with pytest.raises(ConfigError) as excinfo:
        config.load(path, env={})
    assert problems_of(excinfo) == (f"{path}:1: {expected}",)


@pytest.mark.parametrize(("var", "value", "expected"), [
    ("LISTEN_PORT", "abc", "LISTEN_PORT=abc: expected integer, got 'abc'"),
    ("DEDUPLICATION_TIME_WINDOW_SECONDS", "5s",
     "DEDUPLICATION_TIME_WINDOW_SECONDS=5s: expected integer, got '5s'"),
    ("DRY_RUN", "maybe",
     "DRY_RUN=maybe: expected boolean (true/false/1/0/yes/no), got 'maybe'"),
    ("OTEL_TIMEOUT", "0", "OTEL_TIMEOUT=0: must be >= 1, got 0"),
])
def test_env_type_errors_name_the_variable(var: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config.load(None, env={var: value})
    assert problems_of(excinfo) == (expected,)


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("0", False), ("yes", True), ("NO", False), ("True", True), ("false", False),
])
def test_env_booleans(value: str, expected: bool) -> None:
    assert config.load(None, env={"DRY_RUN": value}).dry_run is expected


def test_file_booleans_accept_yaml_and_strings(tmp_path: Path) -> None:
    path = write(tmp_path, 'dry_run: TRUE\nwatch_rules: "False"\nminio:\n  use_ssl: "true"\n')
    s = config.load(path, env={})
    assert (s.dry_run, s.watch_rules, s.minio.use_ssl) == (True, False, True)


def test_lists_from_comma_strings(tmp_path: Path) -> None:
    path = write(tmp_path, 'rules_files: "a.yaml,b.yaml"\n')
    assert config.load(path, env={}).rules_files == ("a.yaml", "b.yaml")
    s = config.load(None, env={"DEFAULT_NOTIFIERS": " slack , ,Webhook ", "PLUGINS": "x.py"})
    assert s.default_notifiers == ("slack", "webhook")
    assert s.plugins == ("x.py",)


def test_scalars_are_accepted_as_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "aws:\n  external_id: 12345\n")
    assert config.load(path, env={}).aws.external_id == "12345"


# --- keys ----------------------------------------------------------------------------------------


def test_unknown_keys_with_suggestions(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        listen_prot: 1
        rules_file: [a.yaml]
        deduplication:
          time_window: 3
        zzz: 1
    """)
    with pytest.raises(ConfigError) as excinfo:
        config.load(path, env={})
    assert problems_of(excinfo) == (
        f"{path}:1: listen_prot: unknown key (did you mean 'listen_port'?)",
        f"{path}:2: rules_file: unknown key (did you mean 'rules_files'?)",
        f"{path}:4: deduplication.time_window: unknown key "
        "(did you mean 'deduplication.time_window_seconds'?)",
        f"{path}:5: zzz: unknown key",
    )


def test_mistyped_dry_run_is_an_error_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dryrun: unknown key \(did you mean 'dry_run'\?\)"):
        config.load(write(tmp_path, "dryrun: true\n"), env={})


def test_keys_are_case_insensitive(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        kubeConfig: /home/me/.kube/config
        Listen_Port: 9000
        OTEL:
          Traces_Enabled: true
        Notifiers:
          Webhook:
            URL: http://example.test/Hook
            Custom_Headers:
              X-Token-Name: MixedCase
    """)
    s = config.load(path, env={})
    assert s.kubeconfig == "/home/me/.kube/config"
    assert s.listen_port == 9000
    assert s.otel.traces_enabled is True
    webhook = s.notifiers["webhook"]
    assert webhook["url"] == "http://example.test/Hook"
    assert dict(webhook["custom_headers"]) == {"X-Token-Name": "MixedCase"}


def test_overrides_are_case_insensitive() -> None:
    s = config.load(None, env={}, overrides={"Deduplication.Time_Window_Seconds": 0})
    assert s.deduplication.time_window_seconds == 0


def test_duplicate_keys_differing_in_case(tmp_path: Path) -> None:
    path = write(tmp_path, "kubeconfig: a\nkubeConfig: b\n")
    with pytest.raises(ConfigError) as excinfo:
        config.load(path, env={})
    assert problems_of(excinfo) == (
        f"{path}:2: kubeconfig: duplicate key (already set as 'kubeconfig')",)


# --- notifiers -----------------------------------------------------------------------------------


def test_notifier_env_vars_without_file_entry() -> None:
    env = {"NOTIFIERS_SLACK_WEBHOOK_URL": "https://hooks.example/T0",
           "NOTIFIERS_SMTP_HOST_PORT": "mail:25", "NOTIFIERS_SMTP_FROM": "talon@example.test"}
    s = config.load(None, env=env)
    assert dict(s.notifiers["slack"]) == {"webhook_url": "https://hooks.example/T0"}
    assert dict(s.notifiers["smtp"]) == {"host_port": "mail:25", "from": "talon@example.test"}


def test_notifier_env_vars_merge_over_file_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "notifiers:\n  slack:\n    webhook_url: https://a\n    format: long\n")
    s = config.load(path, env={"NOTIFIERS_SLACK_FORMAT": "short"},
                    overrides={"notifiers.slack.username": "Talon"})
    assert dict(s.notifiers["slack"]) == {
        "webhook_url": "https://a", "format": "short", "username": "Talon"}


def test_malformed_notifier_env_var() -> None:
    with pytest.raises(ConfigError) as excinfo:
        config.load(None, env={"NOTIFIERS_SLACK": "https://secret"})
    assert problems_of(excinfo) == (
        "NOTIFIERS_SLACK: expected a name like NOTIFIERS_<NAME>_<SETTING>",)


def test_notifier_null_settings_are_dropped(tmp_path: Path) -> None:
    path = write(tmp_path, "notifiers:\n  slack:\n    icon:\n    footer: ''\n")
    assert dict(config.load(path, env={}).notifiers["slack"]) == {"footer": ""}


# --- aliases -------------------------------------------------------------------------------------


def test_aliases(tmp_path: Path) -> None:
    path = write(tmp_path, "otel:\n  use_insecure_grpc: true\n")
    assert config.load(path, env={}).otel.collector_use_insecure_grpc is True
    env = {"OTEL_USE_INSECURE_GRPC": "true", "AWS_ROLE_EXTERNAL_ID": "ext",
           "NAMESPACE": "security"}
    s = config.load(None, env=env)
    assert s.otel.collector_use_insecure_grpc is True
    assert s.aws.external_id == "ext"
    assert s.deduplication.lease_namespace == "security"


def test_primary_env_name_beats_alias() -> None:
    env = {"NAMESPACE": "pod-ns", "DEDUPLICATION_LEASE_NAMESPACE": "lease-ns"}
    assert config.load(None, env=env).deduplication.lease_namespace == "lease-ns"


def test_key_and_its_alias_together_is_a_duplicate(tmp_path: Path) -> None:
    path = write(tmp_path, "otel:\n  collector_use_insecure_grpc: true\n"
                           "  use_insecure_grpc: false\n")
    with pytest.raises(ConfigError, match=r"otel\.use_insecure_grpc: duplicate key"):
        config.load(path, env={})


# --- ranges and choices --------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "message"), [
    ({"listen_port": 65536}, "listen_port (command line): must be between 0 and 65535, got 65536"),
    ({"listen_port": -1}, "listen_port (command line): must be between 0 and 65535, got -1"),
    ({"workers": 0}, "workers (command line): must be between 1 and 256, got 0"),
    ({"max_body_bytes": 10}, "max_body_bytes (command line): must be >= 1024, got 10"),
    ({"read_timeout_seconds": 0}, "read_timeout_seconds (command line): must be > 0, got 0.0"),
    ({"deduplication.time_window_seconds": -1},
     "deduplication.time_window_seconds (command line): must be >= 0, got -1"),
    ({"deduplication.max_entries": 0},
     "deduplication.max_entries (command line): must be >= 1, got 0"),
    ({"log_format": "xml"},
     "log_format (command line): expected one of text, color, json, got 'xml'"),
])
def test_ranges(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config.load(None, env={}, overrides=overrides)
    assert problems_of(excinfo) == (message,)


def test_range_edges_accepted() -> None:
    s = config.load(None, env={}, overrides={
        "listen_port": 0, "workers": 256, "shutdown_timeout_seconds": 0,
        "notifier_retries": 0, "deduplication.time_window_seconds": 0})
    assert (s.listen_port, s.workers, s.shutdown_timeout_seconds) == (0, 256, 0.0)
    assert s.deduplication.time_window_seconds == 0


def test_log_format_is_case_insensitive() -> None:
    assert config.load(None, env={"LOG_FORMAT": "JSON"}).log_format == "json"


def test_dedup_key_forms() -> None:
    env = {"DEDUPLICATION_KEY": "Rule, output_fields.k8s.pod.name,hostname"}
    key = config.load(None, env=env).deduplication.key
    assert key == ("rule", "output_fields.k8s.pod.name", "hostname")
    with pytest.raises(ConfigError) as excinfo:
        config.load(None, env={"DEDUPLICATION_KEY": "rule,pod"})
    assert "unknown event field 'pod'" in str(excinfo.value)
    with pytest.raises(ConfigError):
        config.load(None, env={}, overrides={"deduplication.key": ["output_fields."]})


# --- files ---------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    for required in (True, False):
        with pytest.raises(ConfigError) as excinfo:
            config.load(missing, env={}, required=required)
        assert problems_of(excinfo) == (f"{missing}: configuration file not found",)


def test_required_without_path() -> None:
    with pytest.raises(ConfigError, match="a configuration file is required"):
        config.load(None, env={}, required=True)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "listen_port: 2803\notel:\n  timeout: [1, 2\nlog_format: json\n")
    with pytest.raises(ConfigError) as excinfo:
        config.load(path, env={})
    (problem,) = problems_of(excinfo)
    assert problem.startswith(f"{path}:4: wrong syntax")


def test_top_level_must_be_a_map(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a map at the top level, got a list"):
        config.load(path, env={})


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "listen_port: abc\nwatch_rule: true\n")
    with pytest.raises(ConfigError) as excinfo:
        config.load(path, env={"WORKERS": "many"}, overrides={"queue_size": 0})
    problems = problems_of(excinfo)
    assert len(problems) == 4
    message = str(excinfo.value)
    assert "listen_port: expected integer, got 'abc'" in message
    assert "watch_rule: unknown key (did you mean 'watch_rules'?)" in message
    assert "WORKERS=many: expected integer, got 'many'" in message
    assert "queue_size (command line): must be >= 1, got 0" in message


def test_missing_file_and_env_error_reported_together(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as excinfo:
        config.load(missing, env={"LISTEN_PORT": "x"})
    assert len(problems_of(excinfo)) == 2


# --- immutability --------------------------------------------------------------------------------


def test_settings_are_immutable(tmp_path: Path) -> None:
    s = config.load(str(UPSTREAM_EXAMPLE), env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.listen_port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.otel.timeout = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.notifiers["slack"]["format"] = "short"  # type: ignore[index]
    with pytest.raises(TypeError):
        s.notifiers["other"] = {}  # type: ignore[index]
    assert isinstance(s.rules_files, tuple)


def test_nested_notifier_data_is_frozen(tmp_path: Path) -> None:
    path = write(tmp_path, "notifiers:\n  smtp:\n    to: [a, b]\n    extra: {k: v}\n")
    smtp = config.load(path, env={}).notifiers["smtp"]
    assert smtp["to"] == ("a", "b")
    with pytest.raises(TypeError):
        smtp["extra"]["k"] = "w"


# --- secrets -------------------------------------------------------------------------------------


SECRET_CONFIG = """\
    aws:
      access_key: AKIAEXAMPLE
      secret_key: aws-secret
      region: eu-west-1
    minio:
      secret_key: minio-secret
    notifiers:
      slack:
        webhook_url: https://hooks.slack.com/services/T/B/X
        footer: ""
      webhook:
        url: https://example.test/hook
        custom_headers:
          Authorization: Bearer abc
          X-Other: visible
      smtp:
        user: me
        password: smtp-pass
      loki:
        api_key: loki-key
        token: ""
"""


def test_secrets(tmp_path: Path) -> None:
    s = config.load(write(tmp_path, SECRET_CONFIG), env={})
    assert s.secrets() == frozenset({
        "AKIAEXAMPLE", "aws-secret", "minio-secret", "https://hooks.slack.com/services/T/B/X",
        "Bearer abc", "smtp-pass", "loki-key"})


def test_redacted(tmp_path: Path) -> None:
    s = config.load(write(tmp_path, SECRET_CONFIG), env={})
    plain = config.redacted(s)
    assert plain["aws"] == {"role_arn": "", "external_id": "", "region": "eu-west-1",
                            "access_key": "***", "secret_key": "***"}
    assert plain["minio"]["secret_key"] == "***"
    assert plain["minio"]["access_key"] == ""
    assert plain["notifiers"]["webhook"]["custom_headers"] == {
        "Authorization": "***", "X-Other": "visible"}
    assert plain["notifiers"]["smtp"] == {"user": "me", "password": "***"}
    assert plain["notifiers"]["loki"] == {"api_key": "***", "token": ""}
    assert plain["notifiers"]["slack"]["webhook_url"] == "***"
    assert plain["rules_files"] == []
    assert plain["listen_port"] == 2803
    text = repr(plain)
    assert all(secret not in text for secret in s.secrets())


def test_no_secrets_by_default() -> None:
    assert config.load(None, env={}).secrets() == frozenset()


# --- ENV_VARS ------------------------------------------------------------------------------------


def test_env_vars_table_covers_every_setting() -> None:
    rows = {row[0]: row for row in config.ENV_VARS}
    assert rows["listen_port"] == ("listen_port", "LISTEN_PORT", 2803, rows["listen_port"][3])
    assert rows["deduplication.time_window_seconds"][1] == "DEDUPLICATION_TIME_WINDOW_SECONDS"
    assert "OTEL_USE_INSECURE_GRPC" in rows["otel.collector_use_insecure_grpc"][3]
    assert rows["print_all_events"][2] is False
    assert "notifiers.<name>.<setting>" in rows
    leaves = {f"{section}.{f.name}" for section, cls in [
        ("otel", config.OtelSettings), ("deduplication", config.DedupSettings),
        ("aws", config.AwsSettings), ("minio", config.MinioSettings),
        ("gcp", config.GcpSettings), ("tls", config.TlsSettings),
        ("auth", config.AuthSettings), ("containment", config.ContainmentSettings),
        ("governor", config.GovernorSettings), ("protected", config.ProtectedSettings),
        ("ledger", config.LedgerSettings), ("journal", config.JournalSettings),
        ("kubernetes", config.KubernetesSettings)]
        for f in dataclasses.fields(cls)}
    top = {f.name for f in dataclasses.fields(config.Settings)
           if f.name not in {"otel", "deduplication", "aws", "minio", "gcp", "notifiers",
                             "tls", "auth", "containment", "governor", "protected", "ledger",
                             "journal", "kubernetes"}}
    assert leaves | top | {"notifiers.<name>.<setting>"} == set(rows)
    assert all(row[3] for row in config.ENV_VARS)


def _sample(key: str, default: object) -> tuple[str, object]:
    """An env value for `key` different from its default, and the value it must give."""
    if key == "log_format":
        return "json", "json"
    if key == "otel.protocol":
        return "http/protobuf", "http/protobuf"
    if key == "deduplication.key":
        return "rule", ("rule",)
    if key == "governor.budgets":
        return "namespace:5/600, cluster: 20/60", ("namespace:5/600", "cluster:20/60")
    if key == "protected.selector":
        return "a=b", "a=b"
    if isinstance(default, bool):
        return str(not default).lower(), not default
    if isinstance(default, int | float):
        return str(default + 1), type(default)(default + 1)
    if isinstance(default, tuple):
        return "a, b", ("a", "b")
    return "x", "x"


def test_every_env_var_is_honoured() -> None:
    for key, var, default, _ in config.ENV_VARS:
        if key.startswith("notifiers."):
            continue
        raw, expected = _sample(key, default)
        node: object = config.load(None, env={var: raw})
        for part in key.split("."):
            node = getattr(node, part)
        assert node == expected, (key, var)
        assert node != default, key


def test_relative_path_is_read_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    target = tmp_path / "c.yaml"
    shutil.copy(UPSTREAM_EXAMPLE, target)
    monkeypatch.chdir(tmp_path)
    assert config.load("c.yaml", env={}).default_notifiers == ("k8sevents",)


def test_notify_dry_run_from_file_and_env(tmp_path: Path) -> None:
    assert config.load(None, env={}).notify_dry_run is False
    assert config.load(write(tmp_path, "notify_dry_run: true\n"), env={}).notify_dry_run is True
    assert config.load(None, env={"NOTIFY_DRY_RUN": "yes"}).notify_dry_run is True
    assert any(row[:3] == ("notify_dry_run", "NOTIFY_DRY_RUN", False)
               for row in config.ENV_VARS)


DECLARED_CONFIG = """
    notifiers:
      webhook:
        url: https://user:p4ss@example.test/hook?token=abc123
        custom_headers:
          X-Api-Token: header-token-1
      elasticsearch:
        password: 'es-pa"ss-wörd'
      loki:
        api_key: loki-key
        user: "99999"
"""


def test_secrets_follow_what_each_notifier_declares(tmp_path: Path) -> None:
    from talon import catalog
    from talon.registry import REGISTRY

    catalog.load_builtins()
    s = config.load(write(tmp_path, DECLARED_CONFIG), env={})
    found = s.secrets(REGISTRY)
    assert {"https://user:p4ss@example.test/hook?token=abc123", "header-token-1",
            'es-pa"ss-wörd', "loki-key"} <= found
    assert "99999" not in found
    plain = config.redacted(s, REGISTRY)
    assert plain["notifiers"]["webhook"] == {"url": "***",
                                             "custom_headers": {"X-Api-Token": "***"}}
