"""``python -m softprompt.sweep.worker DIR INDEX``: one local worker process of a sweep (the
launcher starts them; the storage URL comes in ``SOFTPROMPT_SWEEP_STORAGE``)."""

import sys

from .launch import main

if __name__ == "__main__":
    sys.exit(main())
