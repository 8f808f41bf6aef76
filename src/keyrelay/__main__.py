"""``python -m keyrelay``: the ``keyrelay`` command, for environments without the console script."""

from keyrelay.cli.main import main

if __name__ == "__main__":
    main()
