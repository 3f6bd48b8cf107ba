"""`python -m sandbench`, the same program as the `sandbench` command."""

from sandbench.cli import exit_with, main

exit_with(main())
