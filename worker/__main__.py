"""`python -m worker` is the `pave-tracker` command."""

from worker.cli import main

main()
