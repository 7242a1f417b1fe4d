"""Repository-wide pytest setup: the suite's own helpers live in tests/conftest.py."""
