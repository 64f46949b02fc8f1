import sys

from services.modbus_gateway.main import main

sys.exit(main())
