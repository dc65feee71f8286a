import sys

from fsincident.cli import main

sys.exit(main())
