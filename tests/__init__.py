"""The test suite (a package, so that its modules import ``tests.support``)."""
