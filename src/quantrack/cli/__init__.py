"""The quantrack command line (built on the workspace): ``quantrack`` or
``python -m quantrack``.
"""

from quantrack.cli.app import app, main

__all__ = ["app", "main"]
