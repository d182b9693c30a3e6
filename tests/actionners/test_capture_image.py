"""Capture images and digest pinning, as `talon rules check` reports them.

Covers: kubernetes:tcpdump and kubernetes:sysdig with the default image (a tag) or any
image not pinned by digest get a warning (the check still passes); an image pinned as
`name@sha256:<64 hex>` (with or without a tag or a registry port) gets none; a
malformed digest is an error.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from talon import cli

DIGEST = "sha256:" + "0123456789abcdef" * 4


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], actionner: str,
          image: str | None) -> tuple[int, str, str]:
    params = f"image: '{image}'" if image is not None else "duration: 5"
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent(f"""
        - action: Capture
          actionner: {actionner}
          parameters: {{{params}}}
          output: {{target: local:file, parameters: {{destination: /tmp/captures}}}}
        - rule: Capture on shell
          match: {{rules: [Terminal shell in container]}}
          actions: [{{action: Capture}}]
        """))
    code = cli.main(["rules", "check", "-r", str(rules)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("actionner", ["kubernetes:tcpdump", "kubernetes:sysdig"])
@pytest.mark.parametrize("image", [None, "issif/tcpdump:latest", "registry.local:5000/t:1"])
def test_an_image_not_pinned_by_digest_is_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], actionner: str,
        image: str | None) -> None:
    code, out, err = check(tmp_path, capsys, actionner, image)
    assert code == 0, err
    assert "1 warning(s)" in out, out
    [line] = [x for x in err.splitlines() if "not pinned by digest" in x]
    assert line.startswith("warning: ") and "parameters.image" in line
    assert "@sha256:" in line


@pytest.mark.parametrize("actionner", ["kubernetes:tcpdump", "kubernetes:sysdig"])
@pytest.mark.parametrize("image", [f"issif/tcpdump@{DIGEST}", f"issif/tcpdump:4.99@{DIGEST}",
                                   f"registry.local:5000/ns/sysdig:0.1@{DIGEST}"])
def test_an_image_pinned_by_digest_passes_quietly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], actionner: str,
        image: str) -> None:
    code, out, err = check(tmp_path, capsys, actionner, image)
    assert code == 0, err
    assert "0 warning(s)" in out, (out, err)


@pytest.mark.parametrize("image", ["issif/tcpdump@sha256:abc", "issif/tcpdump@md5:" + "0" * 64,
                                   f"@{DIGEST}", f"issif/tcpdump@{DIGEST.upper()}"])
def test_a_malformed_digest_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        image: str) -> None:
    code, _, err = check(tmp_path, capsys, "kubernetes:tcpdump", image)
    assert code == 1
    assert "parameters.image" in err and "sha256" in err
