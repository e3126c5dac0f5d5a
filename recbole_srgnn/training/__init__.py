"""Training and evaluation around stock RecBole: from model and dataset names to a results JSON.

Modules, each importing only those listed before it:

- ``recbole_compat``: every RecBole 1.2.1 behaviour worked around, and how to tell it can go
- ``lr_schedules``: the learning-rate schedules (``lr_scheduler``) the trainer builds
- ``models``: model names (plugin models first, RecBole's built-ins, ``RecBoleSRGNN``)
- ``config``: configuration layers merged into RecBole's ``Config`` (no files besides YAML read)
- ``datasets``: the dataset step (build or find the files) that comes before a ``Config``
- ``startup``: what each run sets in the process (threads, seeds, logging, denormals)
- ``results``: the results JSON (its fields, writer, default name) and the printed table
- ``runs``: ``run``, one training with validation and test, resumable
- ``checkpoints``: ``load_trained`` / ``evaluate_checkpoint``, a saved model rebuilt
- ``distributed``: ``run_distributed``, RecBole's multi-GPU training

Nothing is imported here, so importing one module does not load the others.
"""
