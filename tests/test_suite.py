"""`rules test SUITE.yaml`: how a suite's mistakes and mismatches are reported.

Behaviours covered (through `talon.cli.main`, against the shipped rules.d):
- a mismatch under `expect.parameters` prints a unified diff of the expected and actual
  parameters and exits 1 (no YAML representer error);
- an action named under `expect.parameters` that does not run is a failure;
- an unknown key in a case (`expekt:`) or in `expect` (`action:`), and a case without
  `expect`, are errors naming the suite file, the case and the key, and exit 1: never a pass;
- maps read with line numbers dump as plain YAML maps;
- a suite file without a `tests:` list exits 1 naming the file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from talon import cli, render, yamlio

ROOT = Path(__file__).resolve().parent.parent
SHELL = ROOT / "tests/fixtures/events/falco_shell.json"


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("RULES_FILES", raising=False)


def run_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str],
              body: str) -> tuple[int, str, str]:
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(body).replace("SHELL", str(SHELL)), encoding="utf-8")
    code = cli.main(["rules", "test", "-r", "rules.d", str(suite)])
    out, err = capsys.readouterr()
    return code, out, err


def test_parameters_mismatch_prints_a_unified_diff(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_suite(tmp_path, capsys, """\
        tests:
          - name: wrong label value
            event_file: SHELL
            expect:
              parameters:
                Label Pod as Suspicious:
                  labels: {talon.falco.org/suspicious: "false"}
        """)
    assert code == 1, out + err
    lines = [line.strip() for line in out.splitlines()]
    assert f"FAIL: {tmp_path / 'suite.yaml'}: wrong label value" in lines
    assert "parameters of 'Label Pod as Suspicious' differ:" in lines
    start = lines.index("--- expected")
    assert lines[start + 1] == "+++ actual"
    assert "-  talon.falco.org/suspicious: 'false'" in lines[start:]
    assert "+  talon.falco.org/suspicious: 'true'" in lines[start:]
    assert lines[-1] == "0 passed, 1 failed"


def test_parameters_of_an_action_that_does_not_run(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_suite(tmp_path, capsys, """\
        tests:
          - name: isolation expected
            event_file: SHELL
            expect:
              parameters:
                Isolate Pod: {allow_cidr: []}
        """)
    assert code == 1
    assert "parameters: action 'Isolate Pod' does not run" in out


@pytest.mark.parametrize(("case", "key", "where"), [
    ("expekt: {actions: [Label Pod as Suspicious]}", "expekt", "the case"),
    ("expect: {action: [Label Pod as Suspicious]}", "action", "expect"),
    ("", "expect", "missing"),
])
def test_suite_mistakes_are_errors_never_passes(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                case: str, key: str, where: str) -> None:
    code, out, _ = run_suite(tmp_path, capsys, f"""\
        tests:
          - name: typo case
            event_file: SHELL
            {case}
        """)
    assert code == 1, out
    suite = str(tmp_path / "suite.yaml")
    failures = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert failures, out
    assert all(m.startswith(f"{suite}: case 'typo case': ") for m in failures), out
    message = failures[0]
    assert f"'{key}'" in message
    if where == "missing":
        assert "has no 'expect'" in message
    else:
        assert f"unknown key '{key}' in {where}" in message
    if key == "expekt":
        assert "did you mean 'expect'?" in message
    if key == "action":
        assert "did you mean 'actions'?" in message
    assert out.splitlines()[-1] == "0 passed, 1 failed"


def test_suite_without_tests_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_suite(tmp_path, capsys, "cases: []\n")
    assert code == 1
    assert f"{tmp_path / 'suite.yaml'}: expected a 'tests:' list of cases" in out


def test_maps_read_with_lines_dump_as_plain_maps() -> None:
    data = yamlio.loads("labels: {suspicious: 'true', n: 1}\n")
    assert type(data) is not dict
    assert render.dump(data) == "labels:\n  suspicious: 'true'\n  n: 1\n"
