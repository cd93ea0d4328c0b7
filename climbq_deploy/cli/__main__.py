"""``python -m climbq_deploy.cli ARGS`` = ``climbq ARGS``."""

import sys

from climbq_deploy.cli import main

sys.exit(main())
