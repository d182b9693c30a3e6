"""Label and annotation values written as YAML booleans or numbers (the seed's example).

Behaviours covered, through the command line and `talon.rules`:
- `suspicious: true` (the seed's kubernetes:label example) loads: the value is the string
  "true", with a warning naming the file, line, rule, action and field and suggesting quotes;
  `--strict` makes it an error (exit 1);
- numbers keep their YAML source text (`1.50` → "1.50", `0x1F` → "0x1F"), also through an
  action block reused by a rule and through a later block folded into the first;
- `rules print` shows the strings; `rules test` suites compare against the strings;
- the warning is reported once per value, for the block and not again for the rule.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from talon import catalog, cli, rules

ROOT = Path(__file__).resolve().parent.parent

SEED_EXAMPLE = """\
- action: Label the pod
  actionner: kubernetes:label
  parameters:
    labels:
      suspicious: true
      ratio: 1.50
      build: 0x1F

- action: Note it
  actionner: kubernetes:annotation
  parameters:
    annotations:
      talon.falco.org/count: 3

- rule: Shell
  match:
    rules: [Terminal shell in container]
  actions:
    - action: Label the pod
    - action: Note it
"""


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_accepts_the_seed_example_with_located_warnings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SEED_EXAMPLE)
    code, out, err = run(capsys, "rules", "check", "-r", path)
    assert code == 0, err
    assert out.startswith("rules file valid: 1 rule ")
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 4, err
    first = warnings[0]
    assert first.startswith(f"warning: {path}:")
    assert "rule 'Shell'" in first and "action 'Label the pod'" in first
    assert "field 'parameters.labels.suspicious'" in first
    assert 'a YAML boolean, taken as the string "true": quote it (suspicious: "true")' in first
    assert any('taken as the string "1.50"' in w and "parameters.labels.ratio" in w
               for w in warnings)
    assert any("parameters.annotations.talon.falco.org/count" in w for w in warnings)


def test_strict_makes_them_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SEED_EXAMPLE)
    code, _, err = run(capsys, "rules", "check", "--strict", "-r", path)
    assert code == 1
    assert "error: " in err and "parameters.labels.suspicious" in err


def test_print_shows_the_source_text(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SEED_EXAMPLE)
    code, out, err = run(capsys, "rules", "print", "-r", path)
    assert code == 0, err
    (rule,) = yaml.safe_load(out)
    label, note = rule["actions"]
    assert label["parameters"]["labels"] == {"suspicious": "true", "ratio": "1.50",
                                             "build": "0x1F"}
    assert note["parameters"]["annotations"] == {"talon.falco.org/count": "3"}


def test_a_later_block_folded_into_the_first_keeps_its_text(tmp_path: Path) -> None:
    first = write(tmp_path, SEED_EXAMPLE)
    later = write(tmp_path, """\
        - action: Label the pod
          parameters:
            labels: {ratio: 2.50, fresh: false}
        """, "later.yaml")
    ruleset, problems = rules.check([first, later], catalog.registry())
    assert not [p for p in problems if p.severity == "error"], problems
    action = ruleset.rules[0].actions[0]
    assert dict(action.parameters["labels"]) == {
        "suspicious": "true", "ratio": "2.50", "build": "0x1F", "fresh": "false"}
    assert dict(action.params.labels) == dict(action.parameters["labels"])


def test_suite_compares_against_the_strings(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SEED_EXAMPLE)
    suite = write(tmp_path, f"""\
        tests:
          - name: labelled
            event_file: {ROOT / "tests/fixtures/events/falco_shell.json"}
            expect:
              parameters:
                Label the pod: {{labels: {{suspicious: "true", ratio: "1.50"}}}}
        """, "suite.yaml")
    code, out, _ = run(capsys, "rules", "test", "-r", path, suite)
    assert code == 0, out
    assert out.splitlines()[-1] == "1 passed, 0 failed"
