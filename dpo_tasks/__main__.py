import sys

from dpo_tasks.cli import main

sys.exit(main())
