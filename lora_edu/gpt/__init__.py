"""The small GPT of notebooks 05-07, its synthetic data and its training.

- ``model``: the GPT (``GPT``, ``GPTConfig``, ``GPT_SIZES``).
- ``data``: the synthetic world, its pretraining text and the fine-tuning tasks.
- ``device``: device choice, CPU threads, precision per device (``precision_for``).
- ``train``: the one training loop (``train``), used by pretraining and fine-tuning.
- ``step``: one training step (``TrainStep``: forward, backward, clip, optimizer step), taken by ``train`` and by
  the distributed script.
- ``stepgraph``: the optional CUDA-graph recording of one training step.
- ``evaluate``: language-model loss, exact match, generation.
- ``pretrain``: pretraining and the shipped checkpoint (``checkpoints/``).
- ``finetune``: one call that fine-tunes the GPT by a named method and reports its scores.
- ``progress``: the progress line of long loops.

Imports ``lora_edu.lora`` and ``lora_edu.maths``, never the wings above it.
"""
