import sys

from fraud_assets.cli import main

sys.exit(main())
