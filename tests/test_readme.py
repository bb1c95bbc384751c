"""The README's Python examples run as written (from the repo root, like a user's checkout)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, dataset_dir

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index):
    if "oewn" in BLOCKS[index]:
        dataset_dir("oewn-2025")  # the example reads the real synonym table: skip naming it when absent
    res = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
