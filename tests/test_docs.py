"""The documents stay true to the repository: the README's agent is examples/my_agent.py, and no document
points to files outside the repository or to an issue tracker's numbers."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A path that leaves the checkout, a development folder beside it, or "issue 7" / "issue #7".
OUTSIDE = re.compile(r"\.\./|\bshared/|\bspecs/|\bissue\s+#?\d+", re.IGNORECASE)


def test_readme_example_is_the_example_file():
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in python_blocks(readme) if "register_agent(" in b]
    assert blocks, "README.md should show the example agent in a ```python block"
    source = (ROOT / "examples" / "my_agent.py").read_text()
    body = source.split('"""', 2)[2].lstrip("\n")  # the file without its module docstring
    assert blocks[0] == body


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def test_readme_python_api_example_runs(tmp_path, monkeypatch, pointmass):
    """The README's notebook example, as written, with a smaller budget and dataset (the same calls)."""
    block = next(b for b in python_blocks((ROOT / "README.md").read_text()) if "offrl.train(" in b)
    small = block.replace("steps=3000, eval_every=1000", "steps=300, eval_every=300, eval_episodes=2, "
                          "dataset_size=20_000, threads=1, hidden=[32, 32]")
    small = small.replace('offrl.datasets.load("pointmass-medium")', 'offrl.datasets.load("pointmass-medium", size=20_000)')
    assert small.count("20_000") == 2, "the README example changed: update this test's substitutions"
    pointmass("medium", 20_000)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(small, "README.md", "exec"), scope)
    assert scope["policy"].seed == 1 and len(scope["dataset"]) == 20_000
    assert (tmp_path / "runs" / "results.csv").exists()


def test_no_document_points_outside_the_repository():
    found = [f"{doc.relative_to(ROOT)}:{n}: {line.strip()}" for doc in DOCUMENTS
             for n, line in enumerate(doc.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, "\n".join(found)
