"""``tbkit.read``: the public name of :mod:`tbkit.data.read` (the same module object)."""

import sys

from tbkit.data import read

sys.modules[__name__] = read
