"""``python -m node_tasks`` is ``node-tasks``."""

import sys

from node_tasks.cli import main

sys.exit(main())
