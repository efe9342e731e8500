import sys

from latbench.cli import main

sys.exit(main())
