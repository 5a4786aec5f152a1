"""python3 -m shardcast_driver ..."""

import sys

from .cli import main

sys.exit(main())
