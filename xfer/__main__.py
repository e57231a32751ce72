import sys

from xfer.cli import main

sys.exit(main())
