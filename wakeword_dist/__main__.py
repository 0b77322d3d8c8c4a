import sys

from wakeword_dist.cli import main

sys.exit(main())
