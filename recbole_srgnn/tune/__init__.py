"""Hyperparameter search with Ray Tune: ``python -m recbole_srgnn.tune`` (options: ``--help``,
README *Hyperparameter search*).

Why a search of its own rather than RecBole's ``HyperTuning``: each trial runs the same pipeline
as ``run.py`` (``training.runs.run``) and reports the validation metric after every epoch, so
ASHA can stop weak trials early; test metrics choose nothing: only the best trial's best
checkpoint is tested, once, after the search. Interrupted searches resume (``--resume``).

Modules: ``cli`` (options, resume checks), ``driver`` (Ray and the tuner), ``trial`` (one trial,
in a Ray worker), ``progress`` (the driver's per-trial events and printed lines), ``finish``
(after the search: test the best, write the outputs), ``records`` (a search folder's files and
its trial records), ``report`` (``trials.csv``, ``best.yaml``, ``report.md``, the plot) and
``space`` (search-space files). Importing them loads neither Ray nor RecBole: a bad option or
space file is reported at once.
"""
