"""``python -m netsim``: run netsim without the ``edgesplit`` entry point."""

import sys

from netsim.cli import main

sys.exit(main())
