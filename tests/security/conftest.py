"""The security checks run a whole job in the fault suite's fast world."""

from tests.faults.fixtures import fault_world  # noqa: F401
