"""In-class exercises with automatic checks: what a notebook calls.

    >>> from lora_edu import quiz
    >>> quiz.show("rank-of-product")          # the question (and options, or the function to write)
    >>> answer = None                         # the student replaces None
    >>> quiz.check("rank-of-product", answer) # True / False, with feedback; None while unanswered
    >>> quiz.hint("rank-of-product")          # the next hint, if the exercise has any

The exercises themselves live beside their lessons, one module per notebook (``lora_edu/course/exercises/nb01.py``,
...; see ``lora_edu.course.exercises`` for how to add one).  An instructor shows every answer with
``LORA_EDU_REVEAL=1`` or ``quiz.reveal(True)``.
"""

from __future__ import annotations

from .exercises import load_all
from .exercises.core import Exercise, digest, reveal, revealing

__all__ = ["Exercise", "all_exercises", "check", "digest", "get", "hint", "reveal", "revealing", "show"]

_hints_shown: dict[str, int] = {}


def all_exercises() -> dict[str, Exercise]:
    """Every registered exercise of the course, by id."""
    return load_all()


def get(exercise_id: str) -> Exercise:
    exercises = load_all()
    if not isinstance(exercise_id, str) or exercise_id not in exercises:
        raise ValueError(f"Unknown exercise {exercise_id!r}; known: {', '.join(sorted(exercises))}.")
    return exercises[exercise_id]


def show(exercise_id: str) -> None:
    """Print the question, its options or the function to write, and whether hints exist."""
    ex = get(exercise_id)
    print(ex.prompt)
    if ex.instructions():
        print(ex.instructions())
    if ex.hints:
        print(f"(Stuck? quiz.hint({exercise_id!r}) gives a hint; {len(ex.hints)} available.)")
    if revealing():
        print(f"[instructor] answer: {ex.solution()}")


def hint(exercise_id: str) -> None:
    """Print the next hint (the last one again once all were shown)."""
    ex = get(exercise_id)
    if not ex.hints:
        print("This exercise has no hints: re-read the section it follows.")
        return
    n = min(_hints_shown.get(exercise_id, 0), len(ex.hints) - 1)
    print(f"Hint {n + 1}/{len(ex.hints)}: {ex.hints[n]}")
    _hints_shown[exercise_id] = n + 1


def check(exercise_id: str, answer: object) -> bool | None:
    """Print whether ``answer`` is right, with the explanation or the feedback for that answer.

    Returns True or False, and None while ``answer`` is None.  A number, a letter or a function is expected
    depending on the exercise; anything else is a TypeError/ValueError that says what to write.
    """
    ex = get(exercise_id)
    if answer is None:
        print("No answer yet: replace `None` by your answer in this cell and run it again.")
        if revealing():
            print(f"[instructor] answer: {ex.solution()}")
        return None
    right, message = ex.verdict(answer)
    if right:
        print(f"Correct: {message}")
        return True
    more = f" (quiz.hint({exercise_id!r}) may help)" if ex.hints else ""
    print(f"Not yet. {message}{more}")
    return False
