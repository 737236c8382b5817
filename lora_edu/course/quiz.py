"""In-class exercises with automatic checks: what a notebook calls.

    >>> from lora_edu.course import quiz
    >>> quiz.show("rank-of-sum-rows")          # the question (and options, or the function to write)
    >>> answer = None                          # the student replaces None
    >>> quiz.check("rank-of-sum-rows", answer) # feedback for that answer (nothing while it is None)
    >>> quiz.hint("rank-of-sum-rows")          # the next hint, if the exercise has any
    >>> quiz.predict("predict-id", prediction, measured)  # predict, then run: the prediction against the measurement
    >>> with quiz.after_prediction("predict-id"):       # a later cell whose lines would give that answer away
    ...     print(...)
    >>> quiz.export("my-answers.json")         # this session's answers and verdicts, to hand in

In a notebook the question and the feedback are shown as formatted text and ``check`` returns nothing (no
``Out: True`` under the cell); elsewhere they are printed as plain text and ``check`` returns True/False (None while
unanswered).  ``grade(id, answer)`` returns the verdict without showing anything, for programs and tests.

The exercises themselves live beside their lessons, one module per notebook (``lora_edu/course/exercises/nb01.py``,
...; see ``lora_edu.course.exercises`` for how to add one).  An instructor shows every model solution with
``LORA_EDU_REVEAL=1`` in the environment or ``quiz.reveal(True)``.
"""

from __future__ import annotations

import contextlib
import html
import inspect
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from .exercises import load_all
from .exercises.core import (
    ChoiceExercise,
    CodeExercise,
    Exercise,
    PredictExercise,
    WrittenExercise,
    digest,
    reveal,
    revealing,
)
from .files import write_new_file

__all__ = [
    "Exercise",
    "after_prediction",
    "all_exercises",
    "check",
    "digest",
    "export",
    "get",
    "grade",
    "hint",
    "in_notebook",
    "predict",
    "reveal",
    "revealing",
    "show",
    "to_html",
]

_hints_shown: dict[str, int] = {}
_attempts: dict[str, dict[str, object]] = {}  # exercise id -> this session's latest answer and its verdict
NO_ANSWER = "No answer yet: replace `None` by your answer in this cell and run it again."
STYLES = {  # border colour of the box each kind of message is shown in
    "question": "#4a7bd0",
    "right": "#2e9a47",
    "ungraded": "#6c7a89",  # a written argument: shown for comparison, neither right nor wrong
    "wrong": "#d9822b",
    "waiting": "#9aa0a6",
    "instructor": "#8e44ad",
}


def all_exercises() -> dict[str, Exercise]:
    """Every registered exercise of the course, by id."""
    return load_all()


def get(exercise_id: str) -> Exercise:
    exercises = load_all()
    if not isinstance(exercise_id, str) or exercise_id not in exercises:
        raise ValueError(f"Unknown exercise {exercise_id!r}; known: {', '.join(sorted(exercises))}.")
    return exercises[exercise_id]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (formatted output), False in a plain Python or IPython terminal."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and hasattr(shell, "kernel")


def to_html(text: str) -> str:
    """Plain lesson text as HTML: escaped, `code` in code font, lines starting with '- ' as a list, paragraphs kept."""
    out, items = [], []

    def inline(line: str) -> str:
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(line, quote=False))

    def flush() -> None:
        if items:
            out.append("<ul style='margin:2px 0'>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.split("\n"):
        if line.startswith("- "):
            items.append(inline(line[2:]))
            continue
        flush()
        if line.startswith("<pre>"):  # already HTML (a model solution)
            out.append(line)
        elif line.strip():
            out.append(f"<div>{inline(line)}</div>")
    flush()
    return "".join(out)


def plain(text: str) -> str:
    """What a plain-text reader sees: the same text without the backticks."""
    return re.sub(r"`([^`]+)`", r"\1", text)


def emit(style: str, title: str, body: str, code: str = "", folded: tuple[str, str] = ("", "")) -> None:
    """Show one message: a coloured box of formatted text in a notebook, plain text elsewhere.  ``folded``: (a label,
    lines) shown in the box only behind a click, and only in a notebook (plain text leaves them out)."""
    text = plain(f"{title} {body}".strip()) + (f"\n{code}" if code else "")
    if not in_notebook():
        print(text)
        return
    from IPython.display import display

    block = f"<pre style='margin:4px 0'>{html.escape(code)}</pre>" if code else ""
    label, lines = folded
    if lines:
        block += (f"<details><summary>{html.escape(label)}</summary><pre style='margin:4px 0'>{html.escape(lines)}</pre>"
                  "</details>")
    box = (f"<div style='border-left:4px solid {STYLES[style]};padding:2px 10px;margin:4px 0;line-height:1.45'>"
           f"<b>{html.escape(title)}</b> {to_html(body)}{block}</div>")
    display({"text/html": box, "text/plain": text}, raw=True)


def instructions_text(ex: Exercise) -> str:
    if isinstance(ex, ChoiceExercise):
        return "\n".join(f"- {letter}) {text}" for letter, text in ex.options.items())
    return ex.instructions()


def show_solution(ex: Exercise) -> None:
    """The model solution, for an instructor who reveals answers: code exercises show readable reference code (and
    their worked solution), numbers and letters the reasoning that leads to them."""
    solution = ex.solution()
    if isinstance(ex, CodeExercise):
        emit("instructor", "Instructor, model solution:", ex.worked_solution.strip(), code=solution)
    elif isinstance(ex, WrittenExercise):  # its solution is already the model argument
        emit("instructor", "Instructor, model solution:", solution)
    else:  # a number or a letter, with the reasoning that leads to it
        emit("instructor", "Instructor, model solution:", f"{solution}. Why: {ex.explanation}")


def show(exercise_id: str) -> None:
    """Show the question, its options or the function to write, and whether hints exist."""
    ex = get(exercise_id)
    body = "\n".join(part for part in (ex.prompt, instructions_text(ex)) if part)
    if ex.hints:
        body += f"\n(Stuck? `quiz.hint({exercise_id!r})` gives a hint; {len(ex.hints)} available.)"
    emit("question", "Exercise:", body)
    if revealing():
        show_solution(ex)


def hint(exercise_id: str) -> None:
    """Show the next hint (the last one again once all were shown)."""
    ex = get(exercise_id)
    if not ex.hints:
        emit("waiting", "No hints here:", "re-read the section this exercise follows.")
        return
    n = min(_hints_shown.get(exercise_id, 0), len(ex.hints) - 1)
    emit("question", f"Hint {n + 1}/{len(ex.hints)}:", ex.hints[n])
    _hints_shown[exercise_id] = n + 1


def grade(exercise_id: str, answer: object) -> bool | None:
    """The verdict alone, showing nothing: True or False, None while ``answer`` is None."""
    if answer is None:
        get(exercise_id)
        return None
    return get(exercise_id).verdict(answer)[0]


def report(exercise_id: str, answer: object) -> bool | None:
    """Show the feedback for ``answer`` and return the verdict (None while unanswered)."""
    ex = get(exercise_id)
    if answer is None:
        emit("waiting", "", NO_ANSWER)
        if revealing():
            show_solution(ex)
        return None
    right, message = ex.verdict(answer)
    record(ex, answer, "written" if isinstance(ex, WrittenExercise) and right else "right" if right else "wrong")
    if right and isinstance(ex, WrittenExercise):  # long enough to compare; nothing reads its content
        emit("ungraded", "Not graded:", message)
        return True
    if right:
        emit("right", "Correct:", message)
        return True
    more = f" (`quiz.hint({exercise_id!r})` may help.)" if ex.hints else ""
    emit("wrong", "Not yet.", f"{message}{more}")
    return False


def check(exercise_id: str, answer: object) -> bool | None:
    """Show whether ``answer`` is right, with the explanation or the feedback for that answer.

    A number, a letter, a function or a few sentences are expected depending on the exercise; anything else is a
    TypeError/ValueError that says what to write.  Outside a notebook it returns True or False (None while ``answer``
    is None); in a notebook it returns None, so that no ``Out:`` line repeats the verdict.  A written argument is not
    graded: True there means only that it is long enough to compare with the points a complete one makes.
    """
    verdict = report(exercise_id, answer)
    return None if in_notebook() else verdict


def predict(exercise_id: str, prediction: object, measured: float) -> bool | None:
    """Predict, then run: compare the student's ``prediction`` with what the cell just ``measured``.

    While ``prediction`` is None, the measurement stays hidden: predict first.  The measurement must equal the
    exercise's expected value (it is the same quantity, computed in front of the student).
    """
    ex = get(exercise_id)
    if not isinstance(ex, PredictExercise):
        raise TypeError(f"Exercise {exercise_id!r} is not a predict-then-run exercise; use quiz.check.")
    if not ex.matches(measured, ex.expected()):
        raise AssertionError(f"The measurement {measured!r} differs from the exercise's value {ex.expected()!r}.")
    if prediction is None:
        emit("waiting", "No prediction yet:", "write your number in `prediction` above, then run this cell again. "
             "The measurement is shown once you have committed to a prediction.")
        if revealing():
            show_solution(ex)
        return None
    right, message = ex.verdict(prediction)
    record(ex, prediction, "right" if right else "wrong")
    shown = ex.solution()
    emit("right" if right else "wrong", "Prediction right:" if right else "Prediction off.",
         f"You predicted {prediction}; the cell measured {shown}. {message}")
    return None if in_notebook() else right


@contextlib.contextmanager
def after_prediction(exercise_id: str) -> Iterator[None]:
    """Hold back what the cell prints inside this block until ``exercise_id`` has a prediction on record (or answers
    are revealed): for a cell after a predict-then-run exercise whose lines would give its answer away.  The work
    inside the block is done either way, so later cells have what it computes; only the printing waits."""
    ex = get(exercise_id)
    if not isinstance(ex, PredictExercise):
        raise TypeError(f"Exercise {exercise_id!r} is not a predict-then-run exercise; after_prediction needs one.")
    held = io.StringIO()
    try:
        with contextlib.redirect_stdout(held):
            yield
    except BaseException:
        sys.stdout.write(held.getvalue())  # an error shows everything that led to it
        raise
    if exercise_id in _attempts or revealing():
        sys.stdout.write(held.getvalue())
    else:
        emit("waiting", "Shown after your prediction:", "these lines give away the answer to the prediction above. "
             "Write your number in `prediction` there and run that cell, then run this one again.",
             folded=("the lines, for after you have predicted (or for an instructor)", held.getvalue().rstrip("\n")))


def answer_text(answer: object) -> str:
    """An answer as an instructor can read it: a function's source, a number or letter as written, a text as is."""
    if callable(answer):
        try:
            return inspect.getsource(answer)
        except (OSError, TypeError):
            return repr(answer)
    return answer if isinstance(answer, str) else repr(answer)


def record(ex: Exercise, answer: object, verdict: str) -> None:
    _attempts[ex.id] = {"kind": ex.kind, "verdict": verdict, "answer": answer_text(answer)}


def export(path: str | Path) -> Path:
    """Write this session's exercises to a new JSON file a student can hand in: for every exercise answered, the
    latest answer (a function's source, a number, a letter or a text) and its verdict ("right", "wrong", or
    "written" for an argument, which is not graded). An existing file is never overwritten."""
    graded = [a for a in _attempts.values() if a["verdict"] != "written"]
    summary = {"answered": len(_attempts), "graded": len(graded), "right": sum(a["verdict"] == "right" for a in graded),
               "exercises": dict(sorted(_attempts.items()))}
    return write_new_file(path, json.dumps(summary, indent=1, ensure_ascii=False), (".json",))
