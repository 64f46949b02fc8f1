import sys

from services.can_gateway.main import main

sys.exit(main())
