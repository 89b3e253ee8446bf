"""The ``tbkit`` command line: ``demo``, and ``export``, ``tail``, ``stats`` over the read side.
Nothing else in tbkit imports it."""
