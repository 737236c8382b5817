"""What a student touches in a lesson: the setup cell, widgets, plots and exercises.

- ``notebook``: ``setup_notebook`` (threads, seed, device, versions); ``Findings`` and ``findings_table`` (a lesson's
  comparisons, printed as it goes, then in one table).
- ``widgets``: the instructor's live widgets (rank explorer, rank slider, budget calculator, fit explorer).
- ``plots``: small matplotlib helpers, and ``slide_mode`` for a projector.
- ``quiz`` and ``exercises/``: the exercises of each notebook (``exercises/nbNN.py``) and how they are checked.
- ``answer_key``: every exercise with its model solution and marking guide, printable
  (``python -m lora_edu.course.answer_key answer_key.html``).
- ``files``: ``write_new_file``, for what the course writes for a person (never over an existing file).

The top wing: may import every other wing; nothing imports it except ``lora_edu/__init__.py``.
"""
