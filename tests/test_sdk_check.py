"""`rules check` says when a rule needs an SDK that is not installed, without importing any.

Covers: `module_available` finds installed modules, dotted or not, and reports missing
ones, importing neither the module nor its parent packages (checked in a fresh process:
`google.cloud.storage` is found while `google.cloud` stays unimported); a rule whose
actionner needs a missing module is valid with a warning naming the plug-in and the module
(an error with `--strict`), through the real CLI with a plug-in loaded by `plugins:`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from talon.registry import module_available
from tests.support import ROOT


def test_module_available() -> None:
    assert module_available("json")
    assert module_available("yaml")
    assert module_available("google.cloud.storage")
    assert not module_available("talon_no_such_sdk")
    assert not module_available("google.cloud.talon_no_such_sdk")
    assert not module_available("json.talon_no_such_submodule")


def test_module_available_imports_nothing() -> None:
    probe = textwrap.dedent("""\
        import sys
        from talon.registry import module_available
        assert module_available("google.cloud.storage") and module_available("boto3")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("google", "boto3"))
        print(loaded)
        """)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]"


PLUGIN = '''
from dataclasses import dataclass
from talon.plugin import Result, actionner

@dataclass(frozen=True, slots=True, kw_only=True)
class P:
    x: str = ""

@actionner("acme", "ticket", params=P, description="open a ticket",
           requires=("talon_no_such_sdk",))
def ticket(ctx):
    return Result(output="ok")
'''


def test_rules_check_warns_about_a_missing_sdk(tmp_path: Path) -> None:
    plugin = tmp_path / "acme.py"
    plugin.write_text(PLUGIN)
    config = tmp_path / "config.yaml"
    config.write_text(f'plugins: ["{plugin}"]\n')
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent("""\
        - rule: R
          match: {rules: [F]}
          actions:
            - {action: A, actionner: acme:ticket}
        """))
    cmd = [sys.executable, "-m", "talon", "rules", "check", "-c", str(config), "-r", str(rules)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert ("acme:ticket needs the Python module 'talon_no_such_sdk', which is not "
            "installed here") in done.stdout + done.stderr
    strict = subprocess.run([*cmd, "--strict"], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert strict.returncode == 1
