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
    block = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert block, "README.md should show the example agent in a ```python block"
    source = (ROOT / "examples" / "my_agent.py").read_text()
    body = source.split('"""', 2)[2].lstrip("\n")  # the file without its module docstring
    assert block.group(1) == body


def test_no_document_points_outside_the_repository():
    found = [f"{doc.relative_to(ROOT)}:{n}: {line.strip()}" for doc in DOCUMENTS
             for n, line in enumerate(doc.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, "\n".join(found)
