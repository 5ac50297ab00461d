"""``python -m softprompt ...``: the `softprompt` command without its console script, e.g. for
``accelerate launch -m softprompt train ...`` or a checkout on PYTHONPATH."""

import sys

from softprompt.cli import main

sys.exit(main())
