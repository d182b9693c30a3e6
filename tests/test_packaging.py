"""What ships around the code: the systemd unit, the container image and the Python package.

Behaviours covered:
- one configuration location: every /etc path named by the systemd unit, its README and
  environment example and the Containerfile is under /etc/falco-talon/ (Falco Talon's), and
  the configuration file they name is the application's default (`cli.DEFAULT_CONFIG`);
- pyproject.toml's [project]: name `talon`, the version equal to talon.__version__,
  requires-python >= 3.11, the runtime dependencies exactly those of requirements.txt, the
  `otel` extra exactly requirements-otel.txt, the
  `talon` console script pointing at talon.cli:main, only the `talon` package and its
  sub-packages (every folder of talon/ with an __init__.py), plus the shipped rules;
- setuptools builds it offline (metadata and build_py, the steps of a wheel, from a copy of
  the tree): every talon/**.py and the shipped rules as talon/rules_d/*.yaml, nothing else
  (no tests/, no talon.py), the version, requires-python, the dependencies and the
  console script; `talon.cli.main` returns an int for `sys.exit`; `--version` prints it;
- `talon.cli.shipped_rules()` finds the rules in the source tree and when installed
  (talon/rules_d);
- opt-in (TALON_PIP_INSTALL_TEST=1, needs PyPI): `pip install .` in a fresh venv gives a
  `talon` command whose `--version` and `rules check` (with and without -r) work outside
  the tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import talon
from talon import cli

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_FILES = ("systemd/talon.service", "systemd/README.md", "systemd/talon.env.example",
                 "Containerfile")
ETC_PATH = re.compile(r"/etc/[\w.-]+(?:/[\w.-]+)*/?")


def _etc_paths(name: str) -> list[str]:
    text = (ROOT / name).read_text(encoding="utf-8")
    return [p for p in ETC_PATH.findall(text) if not p.startswith("/etc/systemd/")]


@pytest.mark.parametrize("name", SHIPPED_FILES)
def test_every_configuration_path_is_under_etc_falco_talon(name: str) -> None:
    paths = _etc_paths(name)
    assert paths, f"{name} names no configuration path"
    wrong = [p for p in paths if not p.startswith("/etc/falco-talon/") and
             p != "/etc/falco-talon"]
    assert wrong == [], f"{name}: {wrong}"
    assert cli.DEFAULT_CONFIG.startswith("/etc/falco-talon/")


@pytest.mark.parametrize("name", SHIPPED_FILES)
def test_the_configuration_file_named_is_the_default(name: str) -> None:
    configs = {p for p in _etc_paths(name) if p.endswith("config.yaml")}
    assert configs <= {cli.DEFAULT_CONFIG}, f"{name}: {configs}"


def test_the_unit_starts_the_server_with_the_default_configuration() -> None:
    unit = (ROOT / "systemd/talon.service").read_text(encoding="utf-8")
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = exec_start.split("=", 1)[1].split()
    assert "server" in argv
    assert argv[argv.index("-c") + 1] == cli.DEFAULT_CONFIG


# --- the Python package ---------------------------------------------------------------------


def _pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _requirements(name: str = "requirements.txt") -> list[str]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _packages_on_disk() -> set[str]:
    return {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "talon").rglob(
        "__init__.py")}


def test_project_metadata() -> None:
    data = _pyproject()
    project = data["project"]
    assert isinstance(project, dict)
    assert project["name"] == "talon"
    assert project["version"] == talon.__version__
    assert project["requires-python"] == ">=3.11"
    assert project["dependencies"] == _requirements()
    assert project["optional-dependencies"] == {"otel": _requirements("requirements-otel.txt")}
    assert project["scripts"] == {"talon": "talon.cli:main"}
    build = data["build-system"]
    assert isinstance(build, dict)
    assert build["build-backend"] == "setuptools.build_meta"
    assert any(req.startswith("setuptools") for req in build["requires"])


def test_the_package_list_is_talon_and_its_subpackages() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]  # type: ignore[index]
    listed = set(setuptools["packages"])
    assert listed == _packages_on_disk() | {"talon.rules_d"}
    assert setuptools["package-dir"] == {"talon.rules_d": "rules.d"}
    assert setuptools["package-data"] == {"talon.rules_d": ["*.yaml"]}
    assert not any(name == "tests" or name.startswith("tests.") for name in listed)


def test_main_returns_the_exit_code_and_version_flag(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"talon {talon.__version__}\n"
    assert cli.main(["version"]) == 0


def test_shipped_rules_in_the_source_tree_and_when_installed(tmp_path: Path) -> None:
    assert cli.shipped_rules() == ROOT / "rules.d"
    installed = tmp_path / "site-packages" / "talon"
    (installed / "rules_d").mkdir(parents=True)
    assert cli.shipped_rules(installed) == installed / "rules_d"


def _copy_tree(dest: Path) -> Path:
    """The files a build reads, copied so that no build output lands in the worktree."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("talon", "rules.d"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def test_setuptools_builds_the_package(tmp_path: Path) -> None:
    """The build steps of a wheel (metadata and build_py), offline, from a copy of the tree."""
    src = _copy_tree(tmp_path / "src")
    (tmp_path / "meta").mkdir()
    subprocess.run(
        [sys.executable, "-W", "ignore", "-c", "import setuptools; setuptools.setup()", "-q",
         "egg_info", "-e", str(tmp_path / "meta"), "build_py", "-d", str(tmp_path / "lib")],
        cwd=src, check=True, capture_output=True, timeout=120)
    built = {str(p.relative_to(tmp_path / "lib")) for p in (tmp_path / "lib").rglob("*")
             if p.is_file()}
    assert built == {str(p.relative_to(ROOT)) for p in (ROOT / "talon").rglob("*.py")} | {
        "talon/rules_d/00-default.yaml"} | {
        f"talon/rules_d/{p.name}" for p in (ROOT / "rules.d").glob("*.yaml")}
    (meta,) = (tmp_path / "meta").glob("*.egg-info")
    info = (meta / "PKG-INFO").read_text(encoding="utf-8")
    assert f"Version: {talon.__version__}" in info.splitlines()
    assert "Requires-Python: >=3.11" in info.splitlines()
    entry = (meta / "entry_points.txt").read_text(encoding="utf-8")
    assert "[console_scripts]\ntalon = talon.cli:main" in entry
    base, _, extras = (meta / "requires.txt").read_text(encoding="utf-8").partition("[otel]")
    assert len(base.split()) == len(_requirements())
    assert len(extras.split()) == len(_requirements("requirements-otel.txt"))


@pytest.mark.skipif(not os.environ.get("TALON_PIP_INSTALL_TEST"),
                    reason="downloads the dependencies from PyPI: set TALON_PIP_INSTALL_TEST=1")
def test_pip_install_gives_a_working_command(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", str(ROOT)], check=True,
                   capture_output=True, timeout=1200)
    talon_cmd = str(venv / "bin/talon")
    version = subprocess.run([talon_cmd, "--version"], cwd=tmp_path, capture_output=True,
                             text=True, check=True, timeout=60)
    assert version.stdout == f"talon {talon.__version__}\n"
    for argv in (["rules", "check", "-r", str(ROOT / "rules.d")], ["rules", "check"]):
        checked = subprocess.run([talon_cmd, *argv], cwd=tmp_path, capture_output=True,
                                 text=True, check=False, timeout=60)
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.startswith("rules file valid: ")
