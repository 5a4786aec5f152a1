#!/usr/bin/env python3
"""`python3 driver/shardcast_driver.py ...`: the same as `shardcast-driver ...` or
`python3 -m shardcast_driver ...`; the program is the package driver/shardcast_driver/."""

import sys
from pathlib import Path

if __name__ == "__main__":
    # This file's directory comes first on sys.path; make it so when imported too, so that
    # `import shardcast_driver` finds the package (a directory wins over a module of its name).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from shardcast_driver.cli import main

    sys.exit(main())
