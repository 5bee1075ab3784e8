"""Run the command line interface: ``python -m ecallgw``."""

from ecallgw.cli import main

raise SystemExit(main())
