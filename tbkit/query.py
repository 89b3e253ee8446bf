"""``tbkit.query``: the public name of :mod:`tbkit.data.query` (the same module object)."""

import sys

from tbkit.data import query

sys.modules[__name__] = query
