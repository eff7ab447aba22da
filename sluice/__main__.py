"""``python -m sluice``: the ``sluice`` console script (``sluice.launch``: through the warm runner when it can)."""

from sluice.launch import main

main()
