"""``python -m emu``: the command-line interface (see emu.cli)."""

import sys

from emu.cli import main

sys.exit(main())
