"""`python -m cove`: the same as the `cove` command."""

from cove.cli.entry import main

main()
