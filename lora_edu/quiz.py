"""In-class exercises with automatic checks.

Answers are stored as salted hashes (multiple choice) or computed by the package's own tested
functions (numeric), so a notebook checks an answer without printing it.

    >>> from lora_edu import quiz
    >>> quiz.show("rank-of-product")
    >>> quiz.check("rank-of-product", "d")
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Exercise", "EXERCISES", "check", "show"]


def digest(exercise_id: str, answer: str) -> str:
    return hashlib.sha256(f"{exercise_id}:{answer.strip().lower()}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Exercise:
    """A question with options (multiple choice) or a numeric answer given by ``expected``
    (an int must be matched exactly, a float within ``rel_tol``)."""

    id: str
    prompt: str
    explanation: str
    options: dict[str, str] = field(default_factory=dict)
    answer_digest: str = ""
    expected: Callable[[], float] | None = None
    rel_tol: float = 1e-6

    def is_correct(self, answer: object) -> bool:
        if self.options:
            if not isinstance(answer, str) or answer.strip().lower() not in self.options:
                raise ValueError(f"Answer with one of the letters {', '.join(self.options)} (a string), got {answer!r}.")
            return digest(self.id, answer) == self.answer_digest
        if isinstance(answer, bool) or not isinstance(answer, (int, float)):
            raise TypeError(f"This exercise wants a number, got {answer!r}.")
        expected = self.expected()
        if isinstance(expected, int):  # counts must be exact
            return float(answer) == expected
        return math.isclose(float(answer), float(expected), rel_tol=self.rel_tol)


EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    EXERCISES[exercise.id] = exercise
    return exercise


def show(exercise_id: str) -> None:
    """Print the question (and its options)."""
    ex = get(exercise_id)
    print(ex.prompt)
    for letter, text in ex.options.items():
        print(f"  {letter}) {text}")


def check(exercise_id: str, answer: object) -> bool | None:
    """Print whether ``answer`` is right (with the explanation) and return True/False; None if unanswered."""
    ex = get(exercise_id)
    if answer is None:
        print("No answer yet: set `answer` in the cell above and run this cell again.")
        return None
    if ex.is_correct(answer):
        print(f"Correct. {ex.explanation}")
        return True
    print("Not yet: look again at the section above and try another answer.")
    return False


def get(exercise_id: str) -> Exercise:
    from . import exercises  # noqa: F401  (registers the course's exercises)

    if exercise_id not in EXERCISES:
        raise ValueError(f"Unknown exercise {exercise_id!r}; known: {', '.join(sorted(EXERCISES))}.")
    return EXERCISES[exercise_id]
