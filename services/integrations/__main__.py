import sys

from services.integrations.main import main

sys.exit(main())
