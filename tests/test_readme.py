"""The README's Python code runs as printed.

Every ```python block of README.md is executed, in order, in one fresh namespace (as a reader pasting them into
one Python session would), in quick mode (ADTUTOR_QUICK=1) on the built-in data, from an empty working directory.
"""
import os, re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'


def python_blocks(text: str) -> list[str]:
    "The bodies of the ```python fenced blocks of markdown `text`, in order."
    return re.findall(r'^```python[ \t]*\n(.*?)^```[ \t]*$', text, flags=re.M | re.S)


def test_python_blocks_are_found():
    md = '# t\n```python\na = 1\n```\ntext\n```bash\nls\n```\n```python\nb = a + 1\n```\n'
    assert python_blocks(md) == ['a = 1\n', 'b = a + 1\n']
    assert python_blocks(README.read_text()), 'README.md has no ```python block: nothing to check'


def test_readme_python_runs_as_printed(tmp_path):
    blocks = python_blocks(README.read_text())
    # one fresh interpreter: nothing imported or defined beforehand, the way a reader starts
    script = '\n'.join(f'# --- README block {i + 1}\nexec(compile({b!r}, "README.md block {i + 1}", "exec"), ns)'
                       for i, b in enumerate(blocks))
    env = {**os.environ, 'ADTUTOR_QUICK': '1', 'PYTHONPATH': os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p)}
    res = subprocess.run([sys.executable, '-c', 'ns = {"__name__": "__main__"}\n' + script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f'a README python block failed:\n{res.stderr[-3000:]}'
