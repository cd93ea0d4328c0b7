import sys

from climbq_deploy.cli import main

sys.exit(main())
