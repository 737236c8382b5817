"""The course's exercises, one module per notebook (``nb01.py`` for notebook 01, ...).

How to add an exercise to notebook NN
-------------------------------------
1. Open (or create) ``lora_edu/course/exercises/nbNN.py``; any module named ``nb<digits>`` here is found automatically.
2. Build one of the kinds from ``lora_edu.course.exercises.core`` and pass it to ``register``:

   - ``NumericExercise(id, prompt, explanation, expected=<function computing it with the package>)``: an int is
     matched exactly, a float within ``rel_tol``/``abs_tol``; ``traps=(Trap(lambda: wrong, "misconception"), ...)``
     answers predictable wrong numbers.  NumPy scalars are accepted.
   - ``ChoiceExercise(id, prompt, explanation, options={"a": ..., ...}, answer_digest=digest(id, "c"),
     feedback={letter: "why this is wrong" for every wrong letter})``: exactly one option may be right.
   - ``CodeExercise(id, prompt, explanation, signature="f(x, W) -> y", reference=<package function>,
     cases=lambda rng: [(args...), ...])``: the student's function runs on the hidden cases and is compared with
     ``reference`` (``compare`` may replace the default closeness test, e.g. to accept any factorisation).
     ``traps=(CodeTrap(lambda *args: wrong_result, "the mistake, named"), ...)`` are checked before any numbers are
     shown (a transposed, rescaled or misshapen result is diagnosed without them); ``model_solution`` is readable
     code an instructor reveals.
   - ``PredictExercise`` (a ``NumericExercise``): the student writes ``prediction`` first; the next cell measures the
     quantity and calls ``quiz.predict(id, prediction, measured)``.
   - ``WrittenExercise(id, prompt, explanation=<model answer>, points=("what a complete argument says", ...))``: a
     proof or a "change X and explain", self-checked against the points once written.

   Every kind takes optional ``hints=("first hint", "second hint")``.  Store the digest (a 16-character string)
   rather than calling ``digest(id, "c")`` in the module, so the letter is not in plain text.
3. In the notebook: ``quiz.show("id")`` shows the question; ``answer = None`` then ``quiz.check("id", answer)``
   checks it (``quiz.grade`` returns the verdict silently); ``quiz.hint("id")`` prints the next hint.  An instructor sees every answer with
   ``LORA_EDU_REVEAL=1`` in the environment or ``quiz.reveal(True)``.
4. Test it: right answers pass and plausible wrong ones fail with their feedback (``tests/test_quiz_widgets_fit.py``
   does this for notebooks 01-06; a test there also requires >= 3 exercises, one of them code, per module;
   ``tests/test_quiz_feedback.py`` checks the diagnoses and model solutions).

Nothing here imports ``lora_edu.course.quiz``: ``quiz`` imports these modules when an exercise is first looked up.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

from .core import (
    ChoiceExercise,
    CodeExercise,
    CodeTrap,
    Exercise,
    NumericExercise,
    PredictExercise,
    Trap,
    WrittenExercise,
    digest,
    register,
    registered_by,
    registry,
)

__all__ = [
    "ChoiceExercise",
    "CodeExercise",
    "CodeTrap",
    "Exercise",
    "NumericExercise",
    "PredictExercise",
    "Trap",
    "WrittenExercise",
    "digest",
    "load_all",
    "notebook_modules",
    "register",
    "registered_by",
    "registry",
]


def notebook_modules() -> list[str]:
    """The per-notebook modules present in this package, in order: ['nb01', 'nb02', ...]."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if re.fullmatch(r"nb\d+[a-z]?", m.name))


def load_all() -> dict[str, Exercise]:
    """Import every per-notebook module (each registers its exercises) and return the registry."""
    for name in notebook_modules():
        importlib.import_module(f"{__name__}.{name}")
    return registry()
