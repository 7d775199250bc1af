#!/usr/bin/env python
"""`siamdog organize` as a script: python tools/img2keras.py --help"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))  # run from a checkout

from siamdog.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["organize", *sys.argv[1:]]))
