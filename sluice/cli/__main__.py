"""``python -m sluice.cli``: the ``sluice`` command (the tests and the image's workers run it this way)."""

from sluice.cli import main

main()
