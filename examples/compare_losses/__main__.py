"""``python -m examples.compare_losses``: see :mod:`examples.compare_losses.main`."""

from examples.compare_losses.main import main

if __name__ == "__main__":
    main()
