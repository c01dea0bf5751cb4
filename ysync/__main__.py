import sys

from ysync.cli import main

sys.exit(main())
