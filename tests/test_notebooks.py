"""Static checks of the committed notebooks (the strict nbval run re-executes them and compares outputs)."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(/work/|/tmp/|/root/|/home/|/Users/|[A-Z]:\\\\)")


def cells(path: Path, kind: str) -> list[dict]:
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == kind]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_the_course_has_its_notebooks():
    names = [p.stem[:2] for p in NOTEBOOKS]
    assert names == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stored_and_clean(path):
    code = cells(path, "code")
    assert all(c["execution_count"] is not None for c in code if source(c).strip()), "a code cell was never executed"
    for c in code:
        for out in c["outputs"]:
            assert out["output_type"] != "error", f"stored error output in: {source(c)[:80]}"
            text = json.dumps(out.get("text", "")) + json.dumps(out.get("data", {}).get("text/plain", ""))
            assert not MACHINE_PATH.search(text), f"machine-specific path in an output of: {source(c)[:80]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_structure_of_a_lesson(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    first_md, first_code = source(cells(path, "markdown")[0]), source(cells(path, "code")[0])
    assert first_md.startswith("# ") and "Learning goals" in first_md
    assert "NBVAL_IGNORE_OUTPUT" in first_code and "setup_notebook()" in first_code and "google.colab" in first_code
    assert any(re.search(r"^## Summary", source(c), re.M) for c in cells(path, "markdown"))
    assert sum("quiz.check(" in source(c) for c in cells(path, "code")) >= 2, "at least two exercises with checks"
    for c in cells(path, "code"):  # every cell whose output is not compared must still be checked somewhere
        if "NBVAL_IGNORE_OUTPUT" in source(c) and c is not cells(path, "code")[0]:
            assert "assert" in "".join(source(d) for d in cells(path, "code")), path.name
