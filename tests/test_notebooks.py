"""Static checks of the committed notebooks (the strict nbval run re-executes them and compares outputs)."""

import json
import re
from pathlib import Path

import pytest

from lora_edu import quiz
from lora_edu.course.exercises import CodeExercise
from lora_edu.devtools.portable import output_ignored, trained_tolerance

# every notebook: >= 3 checked exercises, one of them a code exercise
EXERCISES_REQUIRED = {n: 3 for n in ("01", "02", "03", "04", "05", "05b", "05c", "06", "06b", "07")}
NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(/work/|/tmp/|/root/|/home/|/Users/|[A-Z]:\\\\)")


def number(path: Path) -> str:
    """A notebook's number as the course names it: '05', '05b', ..."""
    return path.stem.split("_")[0]


def cells(path: Path, kind: str) -> list[dict]:
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == kind]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_the_course_has_its_notebooks():
    assert [number(p) for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "05b", "05c", "06", "06b", "07"]


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
    assert output_ignored(cells(path, "code")[0]["metadata"]), "the setup cell prints versions: its output is not compared"
    assert "setup_notebook(" in first_code and "google.colab" in first_code
    assert any(re.search(r"^## Summary", source(c), re.M) for c in cells(path, "markdown"))
    checks = [source(c) for c in cells(path, "code") if "quiz.check(" in source(c)]
    assert len(checks) >= EXERCISES_REQUIRED.get(number(path), 2), "too few exercises with checks"
    if number(path) in EXERCISES_REQUIRED:  # and one of them a code exercise (the student's function is checked)
        assert any(isinstance(quiz.get(ex_id), CodeExercise) for c in checks for ex_id in re.findall(r"quiz\.check\(\"([^\"]+)\"", c))
    code = cells(path, "code")
    if any(output_ignored(c["metadata"]) for c in code[1:]):  # a cell whose output is not compared (the setup cell's never
        assert "assert" in "".join(source(d) for d in code), path.name  # is) must still be checked somewhere


def declared_source() -> str:
    """``[project.urls] Source`` in pyproject.toml (read with a pattern: tomllib needs Python 3.11)."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    urls = text.split("[project.urls]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^Source = "([^"]+)"$', urls, re.M).group(1)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_cell_installs_from_the_declared_source_and_explains_a_failure(path, monkeypatch, capsys):
    setup = source(cells(path, "code")[0])
    assert re.search(r'^LORA_EDU_SOURCE = "([^"]+)"$', setup, re.M).group(1) == declared_source()
    import subprocess
    import sys
    import types

    calls = []

    def failing_pip(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Repository not found.")

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(SystemExit, match="Could not install lora_edu from .* Instead: .*run this cell again"):
        exec(compile(setup, path.name, "exec"), {})
    assert calls and calls[0][-1] in (f"git+{declared_source()}", f"lora_edu[course] @ git+{declared_source()}")


def test_setup_notebook_turns_on_colab_widgets(monkeypatch):
    import sys
    import types

    from lora_edu.course.notebook import enable_colab_widgets

    assert enable_colab_widgets() is False  # not on Colab
    turned_on = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: turned_on.append(True))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert enable_colab_widgets() is True and turned_on == [True]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_portable_check_rule(path):
    """Trained figures declare a tolerance and guard their claim; no stored progress bar is frozen at 0%.

    Within a tolerance a figure may drift, and the claim the lesson reads off it must not silently flip: the cell
    asserts it, or prints it in words computed from the figures (a conditional expression), which nbval compares
    exactly. The printed check is the lesson's choice where a student's own settings could change the answer."""
    for c in cells(path, "code"):
        tolerance = trained_tolerance(c["metadata"])
        if tolerance is not None:
            assert not output_ignored(c["metadata"]), "a cell is either compared within a tolerance or ignored"
            guarded = "assert" in source(c) or re.search(r"\bif\b[^:]{0,200}?\belse\b", source(c))
            assert guarded, f"a trained cell must guard its claim (an assert, or a check printed in words): {source(c)[:80]}"
        for out in c["outputs"]:
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert not re.search(r"\b0%\|", text), f"a progress bar stored at 0% in: {source(c)[:80]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_output_rules_stay_out_of_what_students_read(path):
    """nbval's markers and the trained-figure tolerances live in cell metadata, never in a cell's source."""
    for c in cells(path, "code"):
        found = re.findall(r"#\s*(NBVAL_[A-Z_]+|TRAINED_FIGURES|PYTEST_VALIDATE_[A-Z_]+)", source(c))
        assert not found, f"{found} in the source of: {source(c)[:80]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_solution_is_on_the_page_folded_or_hidden(path):
    """Folding is not hiding: GitHub, VS Code and plain JSON show folded cells. Solutions live in the quiz's reveal.
    A code cell may be folded only where its output is the point (a verdict built from numbers printed above, a
    summary): it holds no exercise, and the lesson says how to open it."""
    page = json.loads(path.read_text(encoding="utf-8"))["cells"]
    folded = [c for c in page if c["metadata"].get("jupyter", {}).get("source_hidden")]
    for c in folded:
        assert c["cell_type"] == "code" and "quiz." not in source(c), f"a folded exercise or text: {source(c)[:80]}"
        assert c["outputs"], f"a folded cell must show what it computes: {source(c)[:80]}"
    if folded:
        says_how = any("with the ···" in source(c) for c in page if c["cell_type"] == "markdown")
        assert says_how, "a lesson that folds code says how to open it"
    for c in page:
        assert not re.search(r"<details>[\s\S]*solution", source(c), re.I), f"a folded solution: {source(c)[:80]}"


def test_notebook_04_leaves_the_gradients_of_a_and_b_to_the_exercise():
    """Before its summary, no cell of 04 computes dL/dA or dL/dB: the student's function or the package's does."""
    path = next(p for p in NOTEBOOKS if p.stem.startswith("04"))
    page = [source(c) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]]
    before_summary = page[: next(i for i, s in enumerate(page) if s.startswith("## Summary"))]
    for text in before_summary:
        assert not re.search(r"\.T\s*@\s*G\b|\bG\s*@\s*A|grad_y\.T\s*@\s*x", text), text[:120]
        assert "B^\\top G" not in text and "Bᵀ G" not in text, text[:120]
    assert any("quiz.grade(\"lora-param-grads\", lora_param_grads)" in text for text in page)


def test_notebook_05b_prints_the_trainable_counts_the_package_gives():
    from lora_edu.gpt.finetune import prepare
    from lora_edu.gpt.pretrain import load_pretrained
    from lora_edu.lora.layer import count_parameters

    path = next(p for p in NOTEBOOKS if number(p) == "05b")
    counting = next(c for c in cells(path, "code") if "count_parameters(prepare(base, method" in source(c))
    printed = "".join("".join(o.get("text", "")) for o in counting["outputs"])
    base, _ = load_pretrained("tiny", "cpu")  # the shipped checkpoint the notebook fine-tunes (its vocabulary sets the embedding)
    for method in ("lora-all", "lora-qv", "full", "full-linear", "last-block"):
        assert f"{method:>11}: {count_parameters(prepare(base, method, r=8, alpha=16, seed=0)).trainable:>7,} trainable" in printed
    prompt = next(source(c) for c in cells(path, "markdown") if "**While it runs**" in source(c))
    assert "the counts above" in prompt


def test_findings_table_keeps_one_row_per_finding():
    from lora_edu.course.notebook import VERDICT_WORDS, findings_table

    table = findings_table([("A | B", "agrees", "x"), ("C", "not resolved", "y\n(3 seeds)")], headers=("asked", "verdict", "ours")).data
    lines = table.splitlines()
    assert lines[:4] == ["| | asked | verdict |", "|---|---|---|", "| 1 | A \\| B | **agrees** |", "| 2 | C | **not resolved** |"]
    assert lines[5:7] == [f"- *agrees*: {VERDICT_WORDS['agrees']}", f"- *not resolved*: {VERDICT_WORDS['not resolved']}"]
    assert "- *disagrees*" not in table  # a word is explained only where the table uses it, and "agrees" is not "disagrees"
    assert "1. x" in lines and "2. y (3 seeds)" in lines  # the evidence, folded under the table, one numbered line a row
    assert lines[-1] == "</details>" and lines[8].startswith("<details><summary><b>ours</b>")
    qualified = findings_table([("A", "not resolved against B, disagrees against C, at d = 64", "x")]).data
    assert "| 1 | A | **not resolved** against B, **disagrees** against C, at d = 64 |" in qualified  # short: shown whole
    assert "1. x" in qualified and "*disagrees*:" in qualified
    aside = findings_table([("A", "disagrees at r = 1 (after 400 steps), not resolved at r = 2", "x")]).data
    assert "| 1 | A | **disagrees** at r = 1, **not resolved** at r = 2 |" in aside  # the aside is folded with the evidence
    assert "1. *disagrees at r = 1 (after 400 steps), not resolved at r = 2.* x" in aside
    long = findings_table([("A", "not resolved " + "and more words " * 10, "x")]).data
    assert "| 1 | A | **not resolved** |" in long  # too long for the table: its verdict words alone
    split = findings_table([("A", "not resolved against B, disagrees against C", "x"), ("D", "agrees", "y")],
                           columns={"against B": ["not resolved", "agrees"], "second look": ["loss: agrees | b", ""]}).data.splitlines()
    assert split[:4] == ["| | the paper | against B | second look |", "|---|---|---|---|",
                         "| 1 | A | **not resolved** | loss: **agrees** \\| b |", "| 2 | D | **agrees** |  |"]
    with pytest.raises(ValueError, match="one entry per row"):
        findings_table([("A", "agrees", "x")], columns={"against B": []})
    with pytest.raises(ValueError, match="No findings"):
        findings_table([])
    with pytest.raises(ValueError, match="needs 3 cells"):
        findings_table([("A", "agrees")])


def test_findings_explain_each_verdict_word_once_and_keep_every_row(capsys):
    from lora_edu.course.notebook import VERDICT_WORDS, Findings

    findings = Findings()
    findings.add("Table 5: Wq+Wv beats Wq", "agrees", "ratio 0.26 [0.21, 0.32]")
    findings.add("our extension: the direction belongs to the task", "not resolved", "+0.3 [-0.9, +1.6]")
    findings.add("Table 6: r = 1 is enough", "disagrees at d = 64", "ratio 1.89 [1.39, 2.59]")
    findings.add("Table 6: Wq+Wv above Wq", "agrees", "every rank")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "the paper, Table 5: Wq+Wv beats Wq."
    assert out[1] == f"    ours: agrees ({VERDICT_WORDS['agrees']}). ratio 0.26 [0.21, 0.32]"
    assert out[2] == "our extension: the direction belongs to the task."  # our own claim is not put on the paper
    # "disagrees" is new, although it contains "agrees"; its meaning stands right after it
    assert out[5] == f"    ours: disagrees ({VERDICT_WORDS['disagrees']}) at d = 64. ratio 1.89 [1.39, 2.59]"
    assert out[7] == "    ours: agrees. every rank"  # explained once, at its first use
    assert [row[1] for row in findings.rows] == ["agrees", "not resolved", "disagrees at d = 64", "agrees"]
    with pytest.raises(ValueError, match="none of the verdict words"):
        findings.add("Table 1", "faster", "x")
    assert len(findings.rows) == 4  # a refused row is not kept
    named = Findings(lead="")  # where each claim names its own paper
    named.add("LoRA Without Regret: LoRA's best rate about 10 times full's", "agrees", "5 times")
    out = capsys.readouterr().out.splitlines()
    assert out == ["LoRA Without Regret: LoRA's best rate about 10 times full's.",
                   f"    ours: agrees ({VERDICT_WORDS['agrees']}). 5 times"]
    named.add("Biderman et al.: LoRA learns less", "not resolved on accuracy; agrees on loss", "x")
    said = capsys.readouterr().out.splitlines()[1]
    assert said == f"    ours: not resolved ({VERDICT_WORDS['not resolved']}) on accuracy; agrees on loss. x"
    named.add("Table 6: r = 1 is enough", "agrees at r = 4; disagrees at d = 64", "y")  # each new word glossed where it stands
    named_word = f"disagrees ({VERDICT_WORDS['disagrees']}) at d = 64"
    assert capsys.readouterr().out.splitlines()[1] == f"    ours: agrees at r = 4; {named_word}. y"
    named.add("Table 7: ΔW catches more of W", "agrees", "2.2 times random, printed above", echo=False)
    assert capsys.readouterr().out.splitlines()[1] == "    ours: agrees."  # the cell printed the evidence itself
    assert named.rows[-1][2] == "2.2 times random, printed above"  # ... and the summary keeps it
    named.amend("ΔW catches more", "not resolved on the second probe", "second probe +0.1 [-0.2, +0.4]")
    assert named.rows[-1] == ("Table 7: ΔW catches more of W", "agrees; not resolved on the second probe",
                              "2.2 times random, printed above. second probe +0.1 [-0.2, +0.4]")
    assert capsys.readouterr().out == ""  # an amendment is for the summary: nothing printed
    with pytest.raises(ValueError, match="2 findings"):
        named.amend("Table", "agrees", "x")
    with pytest.raises(ValueError, match="none of the verdict words"):
        named.amend("Table 7", "faster", "x")
    assert named.rows[-1][1] == "agrees; not resolved on the second probe"  # a refused amendment changes nothing
    from lora_edu.course.notebook import explain_words
    assert explain_words("disagrees here, agrees there", {"agrees", "disagrees"}) == (
        f"disagrees ({VERDICT_WORDS['disagrees']}) here, agrees ({VERDICT_WORDS['agrees']}) there")


def test_a_finding_in_a_notebook_is_a_box_with_the_same_plain_text(monkeypatch):
    """In a notebook a finding is a coloured box (source in bold, each verdict word bold, a new word's meaning in
    grey, the evidence beneath); its plain-text form is what a terminal prints."""
    import IPython.display

    from lora_edu.course import notebook, quiz
    from lora_edu.course.notebook import VERDICT_COLOURS, VERDICT_WORDS, Findings

    shown = []
    monkeypatch.setattr(quiz, "in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    findings = Findings()
    findings.add("Table 6: r = 1 is enough", "disagrees at d = 64 & <64", "ratio 1.89 [1.39, 2.59]")
    findings.add("Table 5: Wq+Wv beats Wq", "agrees; disagrees there", "ratio 0.26", echo=False)
    first, second = shown
    assert first["text/plain"] == (f"the paper, Table 6: r = 1 is enough.\n    ours: disagrees ({VERDICT_WORDS['disagrees']}) "
                                   "at d = 64 & <64. ratio 1.89 [1.39, 2.59]")
    box = first["text/html"]
    assert f"border-left:4px solid {VERDICT_COLOURS['disagrees']}" in box
    assert "<b>The paper, Table 6</b>: r = 1 is enough." in box
    assert f"<b>disagrees</b> <span style='color:#777'>({VERDICT_WORDS['disagrees']})</span> at d = 64 &amp; &lt;64." in box
    assert "ratio 1.89 [1.39, 2.59]" in box
    assert f"solid {VERDICT_COLOURS['agrees']}" in second["text/html"]  # the first word it uses colours the bar
    assert "ratio 0.26" not in second["text/html"] and "ratio 0.26" not in second["text/plain"]  # echo=False
    assert "<b>disagrees</b> there" in second["text/html"]  # explained once, in the first box
    assert notebook.finding_html("our question", "descriptive", set(), "").count("<b>") == 1  # no source: nothing else bold


def test_long_evidence_is_listed_and_folded_under_the_numbers(monkeypatch, capsys):
    """Evidence given as a list prints one piece a line and, in a notebook, folds under "the numbers" as a list; one
    long text folds whole (a "; " inside it never splits it); one short text stays in view."""
    import IPython.display

    from lora_edu.course import notebook, quiz
    from lora_edu.course.notebook import Findings

    findings = Findings()
    findings.add("Table 5: Wq+Wv best", "partly", ["Wq+Wv beats Wq (ratio 0.29)", "Wq+Wv vs Wv: not resolved (ratio 0.76)"])
    assert capsys.readouterr().out.splitlines()[2:] == ["    - Wq+Wv beats Wq (ratio 0.29)",
                                                        "    - Wq+Wv vs Wv: not resolved (ratio 0.76)"]
    assert findings.rows[0][2] == "Wq+Wv beats Wq (ratio 0.29); Wq+Wv vs Wv: not resolved (ratio 0.76)"  # one text for the summary
    shown = []
    monkeypatch.setattr(quiz, "in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    Findings().add("Table 5: Wq+Wv best", "partly", ["one", "two"])
    box = shown[0]["text/html"]
    assert "<summary>the numbers</summary>" in box and "<li>one</li><li>two</li>" in box
    prose = "a long reading; " + "with many words " * 15
    assert "<li>" not in notebook.finding_html("Table 5: x", "agrees", set(), prose)  # folded whole, not cut at "; "
    assert "<summary>the numbers</summary>" in notebook.finding_html("Table 5: x", "agrees", set(), prose)
    short = notebook.finding_html("Table 5: x", "agrees", set(), "ratio 0.26 [0.21, 0.32]")
    assert "<details" not in short and "ratio 0.26 [0.21, 0.32]" in short  # one short piece stays in view


def test_lines_to_skip_on_a_first_reading_fold_in_a_notebook_and_print_whole_elsewhere(monkeypatch, capsys):
    import IPython.display

    from lora_edu.course import notebook, quiz

    notebook.show_folded("the verdicts in full", "a < b\nc")
    assert capsys.readouterr().out == "the verdicts in full:\na < b\nc\n"
    shown = []
    monkeypatch.setattr(quiz, "in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    notebook.show_folded("the verdicts in full", "a < b\nc")
    assert shown == [{"text/html": "<details><summary>the verdicts in full</summary><pre>a &lt; b\nc</pre></details>",
                      "text/plain": "the verdicts in full:\na < b\nc"}]
