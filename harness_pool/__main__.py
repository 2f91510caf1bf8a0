"""``python -m harness_pool`` is the ``harness-pool`` command."""

from harness_pool.cli import main

raise SystemExit(main())
