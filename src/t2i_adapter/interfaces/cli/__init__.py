"""The `t2i-adapter` command line; `main.py` wires the subcommands."""
