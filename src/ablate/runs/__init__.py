"""Every run, findable: an index of the job directories under the known results roots.

``python -m ablate.runs list [KEY=VALUE ...] [--since WHEN] [--format table|csv|json]`` and
``python -m ablate.runs show RUN`` (``--help`` for the rest). The job directories are the truth;
the index (``RunsIndex``, a local SQLite file) is rebuilt from them whenever it is missing or
damaged. Like ``ablate.report`` it reads result files through core modules only.
"""

from __future__ import annotations

from ablate.runs.index import ENV_INDEX, RunsIndex, default_path

__all__ = ["ENV_INDEX", "RunsIndex", "default_path"]
