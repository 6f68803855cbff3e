import sys

from lugha.cli import main

sys.exit(main())
