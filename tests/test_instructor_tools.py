"""Instructors' tools: the printable answer key (every exercise, its model solution and marking guide; no file is
overwritten) and slide mode for figures on a projector."""

import pytest

from lora_edu.course import quiz
from lora_edu.course.answer_key import answer_key, exercise_entry, main, write_answer_key
from lora_edu.course.exercises.core import ChoiceExercise, CodeExercise, NumericExercise, WrittenExercise


def test_every_exercise_appears_once_under_its_notebook():
    key = answer_key()
    for exercise_id in quiz.all_exercises():
        assert key.count(f"### `{exercise_id}`") == 1
    headings = [line for line in key.splitlines() if line.startswith("## Notebook ")]
    assert [h.split()[2] for h in headings] == ["01", "02", "03", "04", "05", "05b", "05c", "06", "06b", "07"]


def test_each_kind_shows_its_solution_and_guide():
    for ex in quiz.all_exercises().values():
        entry = exercise_entry(ex)
        if isinstance(ex, CodeExercise):
            assert ex.solution() in entry and "```python" in entry
            assert all(trap.message in entry for trap in ex.traps)
        elif isinstance(ex, WrittenExercise):
            assert ex.explanation in entry and all(point in entry for point in ex.points)
        elif isinstance(ex, ChoiceExercise):
            assert f"**Answer:** {ex.solution()}" in entry
            wrong = [letter for letter in ex.options if letter != ex.correct_letter()]
            assert all(f"- {letter}) {ex.feedback[letter]}" in entry for letter in wrong)
        else:
            assert isinstance(ex, NumericExercise) and f"**Answer:** {ex.solution()}" in entry
            assert all(trap.message in entry for trap in ex.traps)


def test_one_notebook_only_and_unknown_notebooks_refused():
    key = answer_key(["04"])
    assert "## Notebook 04" in key and "## Notebook 05" not in key and "### `lora-param-grads`" in key
    with pytest.raises(ValueError, match="No exercises for nb99"):
        answer_key(["99"])


def test_files_are_written_new_and_never_overwritten(tmp_path):
    md = write_answer_key(tmp_path / "key.md", ["01"])
    assert md.read_text().startswith("# lora-edu: answer key")
    page = write_answer_key(tmp_path / "key.html").read_text()
    assert page.startswith("<!doctype html>") and "<h3><code>lora-param-grads</code>" in page
    md.write_text("the instructor's own notes")
    with pytest.raises(ValueError, match="already exists"):
        write_answer_key(md)
    assert md.read_text() == "the instructor's own notes"
    with pytest.raises(ValueError, match=r"\.md or \.html"):
        write_answer_key(tmp_path / "key.pdf")


def test_command_line(tmp_path, capsys):
    assert main(["--notebook", "02"]) == 0
    assert "### `tail-error`" in capsys.readouterr().out
    target = tmp_path / "key.md"
    assert main([str(target)]) == 0 and target.exists()
    assert main([str(target)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_slide_mode_enlarges_figures_and_puts_the_settings_back():
    import matplotlib as mpl

    from lora_edu.course.plots import slide_mode

    before = mpl.rcParams["figure.dpi"], mpl.rcParams["lines.linewidth"]
    slide_mode(True)
    slide_mode(True, scale=2)  # a second call scales from the settings before the first, not again on top
    assert mpl.rcParams["figure.dpi"] == 2 * before[0] and mpl.rcParams["lines.linewidth"] == 1.5 * before[1]
    slide_mode(False)
    assert (mpl.rcParams["figure.dpi"], mpl.rcParams["lines.linewidth"]) == before
    with pytest.raises(ValueError, match="between 1 and 4"):
        slide_mode(True, scale=10)
    with pytest.raises(TypeError):
        slide_mode("yes")


def factor_by_first_row(M):
    return M[:, :1] / M[0, 0], M[:1]


def test_a_session_s_answers_export_to_a_new_json_file(tmp_path):
    import json

    quiz._attempts.clear()
    quiz.check("rank-of-sum-rows", 4)  # wrong first
    quiz.check("rank-of-sum-rows", 3)  # then right: the latest answer counts
    quiz.check("factor-rank-one", factor_by_first_row)
    quiz.check("proof-rank-of-product", "Each column of B A is B times a column of A, so it lies in the column space "
                                        "of B, and the rank cannot exceed rank B.")
    quiz.predict("predict-rotated-rank-one", 3.0, 2.0)
    quiz.check("tail-error", None)  # unanswered: not exported
    out = quiz.export(tmp_path / "answers.json")
    got = json.loads(out.read_text(encoding="utf-8"))
    assert (got["answered"], got["graded"], got["right"]) == (4, 3, 1)
    ex = got["exercises"]
    assert ex["rank-of-sum-rows"] == {"kind": "number", "verdict": "right", "answer": "3"}
    assert ex["factor-rank-one"]["verdict"] == "wrong" and "def factor_by_first_row(M):" in ex["factor-rank-one"]["answer"]
    assert ex["proof-rank-of-product"]["verdict"] == "written" and ex["predict-rotated-rank-one"]["answer"] == "3.0"
    assert "tail-error" not in ex
    with pytest.raises(ValueError, match="already exists"):
        quiz.export(out)
    with pytest.raises(ValueError, match=r"\.json"):
        quiz.export(tmp_path / "answers.txt")
    quiz._attempts.clear()
