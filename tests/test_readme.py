"""The README's code blocks run in order, as written, in one fresh directory (at reduced sizes).

The Quickstart (python) and the command block (bash) are run one after another in a new temporary directory, the
way a new user follows the README; only the two set-up blocks (virtual environment and ``pip install``) are left
out. To keep the test quick, these documented substitutions shrink the work without changing any command's shape:

- ``"steps": 200`` -> ``"steps": 4`` and ``steps=1000`` -> ``steps=6`` (different, so the two trainings stay two
  runs, as in the README);
- ``--scale small`` -> ``--scale tiny``;
- ``seqzoo bench``'s sizes ``--batch 32 --seq-len 256 --hidden 256`` -> ``--batch 2 --seq-len 8 --hidden 8
  --repeats 1 --warmup 0 --no-memory``;
- ``seqzoo`` -> ``python -m seqzoo.cli.main`` (the console script may not be on PATH).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SUBSTITUTIONS = [
    ('"steps": 200', '"steps": 4'),
    ("steps=1000", "steps=6"),
    ("--scale small", "--scale tiny"),
    ("--batch 32 --seq-len 256 --hidden 256", "--batch 2 --seq-len 8 --hidden 8 --repeats 1 --warmup 0 --no-memory"),
]


def blocks(lang: str) -> list[str]:
    """The README's code blocks of ``lang``, without the set-up blocks (they create venvs and pip install)."""
    found = re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in found if "pip install" not in b]


def shrink(text: str) -> str:
    for old, new in SUBSTITUTIONS:
        text = text.replace(old, new)
    return text


def test_substitutions_still_match_the_readme():
    """If the README changes, the substitutions must follow (else the test would silently run full sizes)."""
    text = "".join(blocks("python") + blocks("bash"))
    for old, _ in SUBSTITUTIONS:
        assert old in text, f"README no longer contains {old!r}; update SUBSTITUTIONS"


@pytest.mark.slow
def test_readme_blocks_run_in_order(tmp_path, monkeypatch):
    (python_block,) = blocks("python")  # the Quickstart
    (commands,) = blocks("bash")  # the command block
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / ".mpl"))
    monkeypatch.chdir(tmp_path)  # the Quickstart writes runs/ into the working directory

    namespace: dict = {}
    exec(compile(shrink(python_block), str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["y"].shape == (8, 100, 1) and namespace["y_t"].shape == (8, 1)
    assert (tmp_path / "runs" / "index.sqlite").exists()

    seqzoo = f"{shlex.quote(sys.executable)} -m seqzoo.cli.main"
    lines = [ln.strip() for ln in commands.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert any(ln.startswith("seqzoo eval runs/adding-lstm-s0-*") for ln in lines)
    for line in lines:
        assert line.startswith("seqzoo "), line
        cmd = shrink(seqzoo + line[len("seqzoo"):])
        proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                              env=os.environ.copy())
        assert proc.returncode == 0, f"README line failed: {line}\n{proc.stderr[-2000:]}"
    # the eval line matched the Quickstart's run and the train line's seed-0 run: both evaluated
    assert len(list((tmp_path / "runs").glob("adding-lstm-s0-*"))) == 2
    assert (tmp_path / "curves.png").exists() and (tmp_path / "report.md").exists()
