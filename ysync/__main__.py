import sys

from ysync.cli import main

# guarded: worker processes (anyio.to_process) import the main module without running it
if __name__ == "__main__":
    sys.exit(main())
