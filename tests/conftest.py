"""Loads every fixture module of the test world (tests/world/fixtures_*.py) so each part owns its own file."""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.world.{path.stem}" for path in (Path(__file__).parent / "world").glob("fixtures_*.py")
)
