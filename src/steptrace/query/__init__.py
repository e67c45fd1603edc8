"""The questions asked across runs: ``where`` (filters and time windows as bound SQL),
``distribution`` (a field's values, and the ``Reader`` the questions read through),
``stats``, ``overview``, ``diff``, ``compare`` and ``export``. Each takes the reader the
``Store`` facade lends it; none imports the runtime."""
