import sys

from t2i_adapter.interfaces.cli.main import main

sys.exit(main())
