"""`python -m awm` is the `awm` command."""

from awm.cli import main

main()
