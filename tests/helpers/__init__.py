"""Test helpers shared across test folders, each defined once here and imported as
``helpers.<module>`` (the "tests" folder is on pytest's pythonpath, pyproject.toml).

- ``helpers.tiny``: the tiny model (and batch) overrides the end-to-end tests train.
- ``helpers.errors``: the one-line-error assertion for user mistakes.
- ``helpers.report_factory``: synthetic matrices and job directories in the documented format.
- ``helpers.train_helpers``: trainer job directories and CLI runs.
- ``helpers.leak_zoo``: models that leak the future, for the causality checks.
- ``helpers.runs_craft``: crafted runs folders (results, identities) for the runs index.
- ``helpers.plugins``: a researcher's attention module as a plugin.
- ``helpers.tiers`` and ``helpers.workers``: the fast tier and pytest-xdist's scheduling.

The coverage simulations (tests/report/coverage_sim*.py, which benchmarks/bench_coverage.py runs
too) and the Slurm clusters and jobs (tests/slurm_cluster.py, tests/slurm/) stay next to their tests.
"""
