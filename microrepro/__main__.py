"""``python -m microrepro ...`` is the same as the ``microrepro`` console script."""

import sys

from microrepro.common.cli import main

if __name__ == "__main__":
    sys.exit(main())
