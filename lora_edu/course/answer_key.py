"""A printable answer key: every exercise of the course, its model solution and what each wrong answer means.

    python -m lora_edu.course.answer_key                    # Markdown, to standard output
    python -m lora_edu.course.answer_key answer_key.html    # a page to print from a browser (answer_key.md: Markdown)
    python -m lora_edu.course.answer_key --notebook 04 out.md

For each exercise, notebook by notebook: the question, the model solution (readable code with its
derivation, the number or letter with its reasoning, or a worked argument), and a marking guide: the misconception
behind each wrong option or predictable wrong number, the usual mistakes a code check diagnoses, and the points a
complete written argument makes. An existing file is never overwritten.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from .exercises import load_all, notebook_modules
from .exercises.core import (
    ChoiceExercise,
    CodeExercise,
    Exercise,
    NumericExercise,
    PredictExercise,
    WrittenExercise,
    registered_by,
)
from .files import write_new_file

__all__ = ["answer_key", "exercise_entry", "main", "write_answer_key"]

KIND_NAMES = {PredictExercise: "predict, then run", NumericExercise: "a number", ChoiceExercise: "multiple choice",
              CodeExercise: "code", WrittenExercise: "a written argument"}


def guide(ex: Exercise) -> list[str]:
    """The marking guide's lines: what each predictable wrong answer means, or what a complete argument says."""
    if isinstance(ex, ChoiceExercise):
        return [f"- {letter}) {ex.feedback[letter]}" for letter in ex.options if letter in ex.feedback]
    if isinstance(ex, NumericExercise):
        return [f"- {trap.value():.6g}: {trap.message}" for trap in ex.traps]
    if isinstance(ex, CodeExercise):
        return [f"- {trap.message}" for trap in ex.traps]
    if isinstance(ex, WrittenExercise):
        return [f"- {point}" for point in ex.points]
    return []


GUIDE_TITLES = {ChoiceExercise: "Each wrong option, and the misconception behind it",
                NumericExercise: "Predictable wrong numbers, and the misconception behind each",
                PredictExercise: "Predictable wrong numbers, and the misconception behind each",
                CodeExercise: "Usual mistakes the check names (besides a transposed, rescaled or misshapen result)",
                WrittenExercise: "A complete argument says"}


def kind_of(ex: Exercise) -> type:
    """The exercise kind ``KIND_NAMES`` knows that ``ex`` is (a specialised code exercise is a code exercise)."""
    return next(k for k in type(ex).__mro__ if k in KIND_NAMES)


def exercise_entry(ex: Exercise) -> str:
    """One exercise as Markdown: question, model solution, marking guide."""
    lines = [f"### `{ex.id}` ({KIND_NAMES[kind_of(ex)]})", "", f"**Question.** {ex.prompt}", ""]
    if isinstance(ex, ChoiceExercise):
        lines += [f"- {letter}) {text}" for letter, text in ex.options.items()] + [""]
    if isinstance(ex, CodeExercise):
        lines += [f"**Model solution.** `{ex.signature}`", "", "```python", ex.solution(), "```", ""]
        if ex.worked_solution:
            lines += [ex.worked_solution.strip(), ""]
    elif isinstance(ex, WrittenExercise):
        lines += ["**Model argument.**", "", ex.solution(), ""]
    else:
        lines += [f"**Answer:** {ex.solution()}", "", f"**Why:** {ex.explanation}", ""]
    marks = guide(ex)
    if marks:
        lines += [f"**{GUIDE_TITLES[kind_of(ex)]}:**", "", *marks, ""]
    return "\n".join(lines)


def notebook_title(module: str) -> str:
    """'Notebook 04 (a LoRA layer by hand)' from the first line of the exercise module's docstring."""
    doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()
    first = doc[0].rstrip(".") if doc else module
    return first.removeprefix("Exercises of ").replace("notebook", "Notebook", 1)


def answer_key(notebooks: Sequence[str] | None = None) -> str:
    """The answer key as Markdown, for every notebook or only those named ('04' or 'nb04')."""
    exercises = load_all()
    modules = notebook_modules()
    if notebooks is not None:
        wanted = {f"nb{str(n).removeprefix('nb').zfill(2)}" for n in notebooks}
        unknown = sorted(wanted - set(modules))
        if unknown:
            raise ValueError(f"No exercises for {', '.join(unknown)}; the notebooks with exercises are "
                             f"{', '.join(m.removeprefix('nb') for m in modules)}.")
        modules = [m for m in modules if m in wanted]
    parts = ["# lora-edu: answer key", "",
             "For instructors. Every exercise of every notebook, with a model solution and a "
             "marking guide. Written arguments are not graded in the notebooks; the guide lists what a complete one "
             "says.", ""]
    for module in modules:
        full = f"{__package__}.exercises.{module}"
        ids = [i for i in exercises if registered_by(i) == full]
        parts += [f"## {notebook_title(full)}", ""] + [exercise_entry(exercises[i]) for i in ids]
    return "\n".join(parts).rstrip() + "\n"


def write_answer_key(path: str | Path, notebooks: Sequence[str] | None = None) -> Path:
    """Write the key to a new file: Markdown for ``.md``, a printable HTML page for ``.html``."""
    text = answer_key(notebooks)
    if Path(path).suffix == ".html":
        import mistune  # installed with Jupyter (nbconvert renders Markdown with it)

        text = ("<!doctype html><meta charset='utf-8'><title>lora-edu: answer key</title>"
                "<style>body{font-family:sans-serif;max-width:50em;margin:auto;line-height:1.45}"
                "pre{background:#f4f4f4;padding:6px}h3{page-break-after:avoid}</style>\n" + mistune.html(text))
    return write_new_file(path, text, (".md", ".html"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lora_edu.course.answer_key", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="a new .md or .html file (default: Markdown to standard output)")
    parser.add_argument("--notebook", action="append", help="only this notebook's exercises, e.g. 04 (repeatable)")
    args = parser.parse_args(argv)
    try:
        if args.out is None:
            sys.stdout.write(answer_key(args.notebook))
        else:
            print(f"answer key written to {write_answer_key(args.out, args.notebook)}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
