"""How a run reports its progress: (stage, fraction done), written to the run store as it goes.

The store keeps the latest stage of every run, so the CLI's display, `training runs show` and
the web API all read one source. Stages: loading, splitting, "cross-validation fold k of K",
fitting, evaluating, saving, then the final status.
"""

from __future__ import annotations

from collections.abc import Callable

Reporter = Callable[[str, float], None]
