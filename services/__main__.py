import sys

from services.launcher import main

sys.exit(main())
