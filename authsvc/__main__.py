"""`python -m authsvc …`: the `authsvc` command."""

from authsvc.cli.main import main

main(prog_name="authsvc")
