"""``python -m litesweep.search`` is the same as the ``litesweep`` command."""

from litesweep.search.app import main

main()
