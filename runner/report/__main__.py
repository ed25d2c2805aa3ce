import sys

from runner.report.cli import main

sys.exit(main())
