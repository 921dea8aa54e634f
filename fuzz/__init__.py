"""Property-based (Hypothesis) fuzz suites; see fuzz/README.md.

A package so that ``fuzz/conftest.py`` is imported as ``fuzz.conftest`` and does not
replace ``tests/conftest.py`` in ``sys.modules`` (the tests import helpers from it).
"""
