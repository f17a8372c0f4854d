import sys

from uss_bench.cli import main

sys.exit(main())
