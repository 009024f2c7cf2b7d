"""Fixtures for the end-to-end tests; they live in harness.py so test modules can import its helpers by name."""

from harness import (  # noqa: F401 - re-exported pytest fixtures and hooks
    ami,
    app,
    home,
    pytest_collection_modifyitems,
    testbed,
)
