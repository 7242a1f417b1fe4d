"""Repository-wide pytest setup; the suite's own helpers live in tests/conftest.py."""

# The plugin tests drive pytest with pytester.
pytest_plugins = ["pytester"]
