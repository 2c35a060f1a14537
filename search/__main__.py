"""``python -m search`` is the same as the ``litesweep`` command."""

from search.app import main

main()
