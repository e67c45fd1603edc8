"""What the tests share and the benches reuse: loopback servers, the PostgreSQL server
the suite starts, the fault, kill and leak trials, known data, plain helpers.

Importable as ``tests.support`` from the repository's root: pytest puts the root on
``sys.path`` (``tests`` is a package), and the benches run as ``python -m bench.NAME``
from there. Fixtures are not here: they live in ``tests/conftest.py``.
"""
