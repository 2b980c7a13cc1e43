"""``python -m tinyset ...`` and ``torchrun --nproc-per-node N -m tinyset distill ...``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
