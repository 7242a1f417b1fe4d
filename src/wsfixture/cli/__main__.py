"""``python -m wsfixture.cli``: the same as the ``wsfixture`` command."""

import sys

from wsfixture.cli.main import main

sys.exit(main())
