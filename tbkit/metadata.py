"""``tbkit.metadata``: the public name of :mod:`tbkit.data.metadata` (the same module object)."""

import sys

from tbkit.data import metadata

sys.modules[__name__] = metadata
