"""``tbkit.keras``: the public name of :mod:`tbkit.integrations.keras` (the same module object).

Importing it imports TensorFlow and Keras.
"""

import sys

from tbkit.integrations import keras

sys.modules[__name__] = keras
