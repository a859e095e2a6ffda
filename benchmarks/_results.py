"""Shared by the benchmark scripts (run as ``python benchmarks/<name>.py``, so
this folder is on ``sys.path``): saving a run's figures as JSON."""

import json
import pathlib


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` to ``path`` (parent folders created) and say so."""
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
