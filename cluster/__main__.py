"""`python -m cluster` is `sessionha`."""

from .cli import main

raise SystemExit(main())
