import sys

from imf_kg.cli import main

sys.exit(main())
