"""Sub-commands of the ``ecallgw`` command line: one module each, loaded on demand.

Each module defines ``HELP: str``, ``configure(parser)`` to add its arguments, and
``run(args) -> int`` returning the exit status. ``cli.py`` lists them in ``COMMANDS``.
"""
