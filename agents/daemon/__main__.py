"""Allow ``python -m agents.daemon`` as an alias of the ``chatdesk-agent`` console script."""

from __future__ import annotations

import sys

from agents.daemon.cli import main

sys.exit(main())
