"""`python -m training` and the `training` console script."""

from __future__ import annotations

import sys

from training.cli.app import install_signal_handlers
from training.cli.app import main as _main


def main() -> None:
    install_signal_handlers()
    sys.exit(_main())


if __name__ == "__main__":
    main()
