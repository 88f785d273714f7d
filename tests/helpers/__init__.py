"""Test helpers shared across test folders, imported as ``helpers.<module>`` (the "tests" folder is
on pytest's pythonpath, pyproject.toml).

- ``helpers.tiny``: the tiny model (and batch) overrides the end-to-end tests train.
- ``helpers.errors``: the one-line-error assertion for user mistakes.

The larger factories stay next to the tests that own them and are defined only there:
``report_factory`` (synthetic matrices and job directories, tests/report), ``train_helpers``
(trainer job directories and CLI runs, tests/train), ``leak_zoo`` (models that leak the future,
tests/causality).
"""
