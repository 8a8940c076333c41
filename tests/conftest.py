"""Loads every fixture module of the test world (tests/world/fixtures_*.py) so each part owns its own file."""

from pathlib import Path

pytest_plugins = sorted(f"tests.world.{path.stem}" for path in (Path(__file__).parent / "world").glob("fixtures_*.py"))

import logging  # noqa: E402

# moto's server logs every request at INFO; a failing test's report should show ours.
logging.getLogger("werkzeug").setLevel(logging.WARNING)
