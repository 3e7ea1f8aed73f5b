"""``python -m taskwarden worker myapp:app ...``: the same as ``taskwarden-py``."""

from .cli import main

raise SystemExit(main())
