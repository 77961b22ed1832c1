import sys

from smartswitch.cli import main

sys.exit(main())
