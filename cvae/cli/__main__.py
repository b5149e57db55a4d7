"""``python -m cvae.cli``: the ``cvae`` command."""

from cvae.cli import main

main()
