"""`talon rules replay` and JSON Lines input for `rules test`.

Behaviours covered:
- replaying a recorded Falco file against the shipped rules prints each event with actions
  (file:line, Falco rule, rule / action, actionner, final parameters) and the summary
  (events read, bad lines, events per rule, actions per actionner), exit 0;
- with `--baseline`, only the events whose outcome differs are shown, as a diff, and the
  summary counts what would newly run, stop or change; `--fail-on-change` then exits 1,
  and 0 when nothing differs; `--fail-on-change` without `--baseline` is a usage error;
- `--json` prints one JSON object per shown event and a final summary object;
- bad lines (not JSON, not an object, a bad field, not UTF-8, too long) are reported on
  stderr as file:line, counted, skipped; the exit code stays 0; an unreadable file exits 1;
- a `.json` file holding one event or a list of events works (list items named
  file[n]); a `.json` file holding JSON Lines streams;
- an event whose top-level keys differ in case still matches (the fast path that skips
  events no rule names does not change outcomes);
- `rules test` accepts a `.jsonl` file (one event per line), naming each as file:line;
- the replay imports no cloud or Kubernetes SDK.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from talon import cli, eventfiles

ROOT = Path(__file__).resolve().parent.parent
RECORDED = "tests/fixtures/events/recorded.jsonl"
SHIPPED = (ROOT / "rules.d" / "00-default.yaml").read_text()
LABEL = 'kubernetes:label {"labels":{"talon.falco.org/suspicious":"true"}}'
ISOLATE = 'kubernetes:networkpolicy {"allow_cidr":[]}'

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("RULES_FILES", raising=False)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def call(*argv: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return call


def changed_rules(tmp_path: Path) -> str:
    """The shipped rules, except: sensitive reads also isolate; dropped binaries match no
    more (renamed Falco rule)."""
    before_c2 = "    - action: Label Pod as Suspicious\n\n- rule: Command and control traffic"
    assert before_c2 in SHIPPED
    text = SHIPPED.replace(before_c2, before_c2.replace(
        "\n\n", "\n    - action: Isolate Pod\n\n"))
    text = text.replace("- Drop and execute new binary in container",
                        "- Drop and execute new binary in host")
    assert text.count("- action: Isolate Pod") == 4  # its definition and three uses
    path = tmp_path / "new.yaml"
    path.write_text(text)
    return str(path)


def test_replay_of_the_shipped_rules_prints_actions_and_summary(run: Run) -> None:
    code, out, err = run("rules", "replay", RECORDED, "-r", "rules.d")
    assert (code, err) == (0, "")
    assert out == f"""\
{RECORDED}:1: "Terminal shell in container" ("Notice")
  Shell in a container / Label Pod as Suspicious: {LABEL}
{RECORDED}:3: "Read sensitive file untrusted" ("Warning")
  Sensitive file read / Label Pod as Suspicious: {LABEL}
{RECORDED}:4: "Unexpected outbound connection destination" ("Critical")
  Command and control traffic / Label Pod as Suspicious: {LABEL}
  Command and control traffic / Isolate Pod: {ISOLATE}
{RECORDED}:7: "Drop and execute new binary in container" ("Critical")
  Dropped binary executed / Label Pod as Suspicious: {LABEL}
  Dropped binary executed / Isolate Pod: {ISOLATE}
{RECORDED}:10: "Search Private Keys or Passwords" ("Warning")
  Sensitive file read / Label Pod as Suspicious: {LABEL}
events read: 10, bad lines: 0
events with actions: 5
events per rule:
  Command and control traffic: 1
  Dropped binary executed: 1
  Sensitive file read: 2
  Shell in a container: 1
actions per actionner:
  kubernetes:label: 5
  kubernetes:networkpolicy: 2
"""


def test_baseline_shows_exactly_the_changed_outcomes(run: Run, tmp_path: Path) -> None:
    new = changed_rules(tmp_path)
    code, out, err = run("rules", "replay", RECORDED, "-r", new, "--baseline", "rules.d")
    assert (code, err) == (0, "")
    assert out == f"""\
{RECORDED}:3: "Read sensitive file untrusted" ("Warning")
    Sensitive file read / Label Pod as Suspicious: {LABEL}
  + Sensitive file read / Isolate Pod: {ISOLATE}
{RECORDED}:7: "Drop and execute new binary in container" ("Critical")
  - Dropped binary executed / Label Pod as Suspicious: {LABEL}
  - Dropped binary executed / Isolate Pod: {ISOLATE}
  (no action runs with the new rules)
{RECORDED}:10: "Search Private Keys or Passwords" ("Warning")
    Sensitive file read / Label Pod as Suspicious: {LABEL}
  + Sensitive file read / Isolate Pod: {ISOLATE}
events read: 10, bad lines: 0
events whose outcome differs: 3
would newly run (rule / action: events):
  Sensitive file read / Isolate Pod: 2
would stop (rule / action: events):
  Dropped binary executed / Isolate Pod: 1
  Dropped binary executed / Label Pod as Suspicious: 1
would run with other parameters (rule / action: events): none
"""
    code, _, _ = run("rules", "replay", RECORDED, "-r", new, "--baseline", "rules.d",
                     "--fail-on-change")
    assert code == 1


def test_changed_parameters_are_a_change(run: Run, tmp_path: Path) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(SHIPPED.replace('suspicious: "true"', 'suspicious: "yes"'))
    code, out, _ = run("rules", "replay", RECORDED, "-r", str(new), "--baseline",
                       "rules.d", "--json", "--fail-on-change")
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(r["line"], len(r["before"]), len(r["after"])) for r in lines[:-1]] == [
        (1, 1, 1), (3, 1, 1), (4, 2, 2), (7, 2, 2), (10, 1, 1)]
    assert lines[0]["before"][0]["parameters"] == {
        "labels": {"talon.falco.org/suspicious": "true"}}
    assert lines[0]["after"][0]["parameters"] == {
        "labels": {"talon.falco.org/suspicious": "yes"}}
    assert lines[-1]["summary"]["changed_parameters"] == {
        "Shell in a container / Label Pod as Suspicious": 1,
        "Sensitive file read / Label Pod as Suspicious": 2,
        "Command and control traffic / Label Pod as Suspicious": 1,
        "Dropped binary executed / Label Pod as Suspicious": 1}
    assert lines[-1]["summary"]["changed_events"] == 5


def test_no_change_exits_0_with_fail_on_change(run: Run) -> None:
    code, out, _ = run("rules", "replay", RECORDED, "-r", "rules.d", "--baseline",
                       "rules.d", "--fail-on-change")
    assert code == 0
    assert out.startswith("events read: 10, bad lines: 0\nevents whose outcome differs: 0\n")


def test_fail_on_change_needs_a_baseline(run: Run) -> None:
    code, _, err = run("rules", "replay", RECORDED, "-r", "rules.d", "--fail-on-change")
    assert code == 2
    assert "--fail-on-change needs --baseline" in err


def test_json_output_is_one_object_per_event_then_the_summary(run: Run) -> None:
    code, out, _ = run("rules", "replay", RECORDED, "-r", "rules.d", "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[2] == {
        "file": RECORDED, "line": 4, "rule": "Unexpected outbound connection destination",
        "priority": "Critical", "actions": [
            {"rule": "Command and control traffic", "action": "Label Pod as Suspicious",
             "actionner": "kubernetes:label",
             "parameters": {"labels": {"talon.falco.org/suspicious": "true"}}},
            {"rule": "Command and control traffic", "action": "Isolate Pod",
             "actionner": "kubernetes:networkpolicy", "parameters": {"allow_cidr": []}}]}
    assert lines[-1] == {"summary": {
        "events": 10, "bad_lines": 0, "events_with_actions": 5,
        "events_per_rule": {"Shell in a container": 1, "Sensitive file read": 2,
                            "Command and control traffic": 1, "Dropped binary executed": 1},
        "actions_per_actionner": {"kubernetes:label": 5, "kubernetes:networkpolicy": 2}}}


def test_bad_lines_are_reported_with_file_and_line(run: Run, tmp_path: Path) -> None:
    good = (ROOT / RECORDED).read_bytes().splitlines()[0]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([
        b"not json", good, b"", b"[1, 2]", b'{"rule": 5}', b"\xff\xfe{}",
        b'{"rule": "x"}' + b" " * eventfiles.MAX_LINE, good]) + b"\n")
    code, out, err = run("rules", "replay", str(path), "-r", "rules.d")
    assert code == 0
    assert err.splitlines() == [
        f"{path}:1: bad line: invalid JSON: Expecting value at line 1 column 1",
        f"{path}:4: bad line: expected a JSON object, got list",
        f"{path}:5: bad line: rule: expected a string, got int",
        f"{path}:6: bad line: not UTF-8: invalid start byte at byte 0",
        f"{path}:7: bad line: line longer than {eventfiles.MAX_LINE} bytes",
    ]
    assert f"{path}:2: " in out and f"{path}:8: " in out
    assert "events read: 2, bad lines: 5\n" in out


def test_unreadable_file_exits_1(run: Run, tmp_path: Path) -> None:
    code, out, err = run("rules", "replay", str(tmp_path / "missing.jsonl"), RECORDED,
                         "-r", "rules.d")
    assert code == 1
    assert "missing.jsonl" in err
    assert "events read: 10, bad lines: 0" in out


def test_json_documents_and_json_lines_named_json(run: Run, tmp_path: Path) -> None:
    events = [json.loads(line) for line in (ROOT / RECORDED).read_text().splitlines()]
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(events[:4], indent=2))
    single = tmp_path / "one.json"
    single.write_text(json.dumps(events[6], indent=2))
    lines = tmp_path / "falco.json"
    lines.write_text("".join(json.dumps(e) + "\n" for e in events[8:]))
    code, out, _ = run("rules", "replay", str(listed), str(single), str(lines),
                       "-r", "rules.d")
    assert code == 0
    headers = [line.split(": ")[0] for line in out.splitlines() if line.startswith(str(tmp_path))]
    assert headers == [f"{listed}[1]", f"{listed}[3]", f"{listed}[4]", str(single),
                       f"{lines}:2"]
    assert "events read: 7, bad lines: 0" in out


def test_top_level_keys_in_any_case_still_match(run: Run, tmp_path: Path) -> None:
    event = json.loads((ROOT / RECORDED).read_text().splitlines()[0])
    event["Rule"] = event.pop("rule")
    path = tmp_path / "case.jsonl"
    path.write_text(json.dumps(event) + "\n")
    code, out, _ = run("rules", "replay", str(path), "-r", "rules.d")
    assert code == 0
    assert f"Shell in a container / Label Pod as Suspicious: {LABEL}" in out


def test_rules_test_accepts_json_lines(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    lines = (ROOT / RECORDED).read_text().splitlines()
    path.write_text(lines[0] + "\nnot json\n" + lines[5] + "\n")
    code, out, err = run("rules", "test", str(path), "-r", "rules.d")
    assert code == 1  # a bad event is an error in `rules test`, as a bad .json file is
    assert err == f"{path}:2: invalid JSON: Expecting value at line 1 column 1\n"
    assert out.splitlines()[0] == (f"# {path}:1: Falco rule 'Terminal shell in container', "
                                   "priority 'Notice'")
    assert "  actionner: kubernetes:label" in out
    assert out.splitlines()[-2:] == [
        f"# {path}:3: Falco rule 'Write below etc', priority 'Error'", "no rule matches"]


def test_replay_imports_no_sdk(tmp_path: Path) -> None:
    code = ("import sys; from talon import cli; "
            f"rc = cli.main(['rules', 'replay', {RECORDED!r}, '-r', 'rules.d']); "
            "heavy = {'kubernetes', 'boto3', 'botocore', 'minio', 'google.cloud'} & "
            "set(sys.modules); print('heavy:', sorted(heavy)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "heavy: []"
