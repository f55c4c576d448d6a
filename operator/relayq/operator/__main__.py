"""`python -m relayq.operator`."""

from __future__ import annotations

import sys

from relayq.operator.main import main

sys.exit(main())
