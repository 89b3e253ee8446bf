"""``python -m tbkit.cli``: the ``tbkit`` command."""

import sys

from tbkit.cli.main import main

sys.exit(main())
