"""Entry point of `python -m ops`."""

from ops.cli import main

main(prog_name="python -m ops")
