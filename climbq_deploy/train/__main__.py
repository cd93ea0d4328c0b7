"""``python -m climbq_deploy.train ARGS`` = ``climbq train ARGS``, the entry point for
``torchrun --nproc_per_node N -m climbq_deploy.train --data DATA --out RUN ...``."""

import sys

from climbq_deploy.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
