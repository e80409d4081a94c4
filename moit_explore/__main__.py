"""``python -m moit_explore``: the command-line interface (see ``moit_explore.cli``)."""

from moit_explore.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
