"""The case tests seed predictions the way the inference tests do."""

from tests.inference.conftest import batch, make_version, predict  # noqa: F401 - re-exported fixtures
