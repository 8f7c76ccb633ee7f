"""`python -m cx.migrations MESSAGE` (`make migration`): write a new revision to edit."""

import sys

from cx.migrations import write_revision

write_revision(" ".join(sys.argv[1:]) or "a change of the tables")
