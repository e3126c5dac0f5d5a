"""Experiment tooling shipped with the package: comparisons, fusion runs and their shared parts.

The shared modules (``machine``, ``stats``, ``tables``, ``options``,
``results_dir``) hold one copy of the plumbing the runners, the reports and the benchmark scripts
use; the runners (``compare_*`` and ``fusion_*``, started as ``python -m recbole_srgnn.compare``
and ``python -m recbole_srgnn.fusion``) build on them. Imports go one way: shared modules import
no runner, a runner's report imports its runs, and each command line imports what it runs.
"""
