"""The README's code runs as written, and .ci/run runs exactly the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 2, "README lost an example"
    monkeypatch.chdir(tmp_path)  # blocks may write figures
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "reliability_nnx.png").read_bytes()[:4] == b"\x89PNG"


def test_readme_figures_exist():
    for path in re.findall(r"!\[[^]]*\]\(([^)]+)\)", README):
        assert (ROOT / path).is_file(), path


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"^(python3 -m venv .*pytest.*)$", README, flags=re.M)
    assert len(commands) == 1, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[0] in ci
