"""Helpers shared by the test modules, so that no test module imports another.

Each submodule is imported on its own (``from tests.support.shop import Shop``): the unit
tests load only what they use, never psycopg or a browser. Assertions in these modules are
rewritten by pytest like a test's own (``tests/conftest.py`` registers the package).
"""
