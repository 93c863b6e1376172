"""``python -m mixq``: the ``mixq`` command line."""

from mixq.cli.main import entry_point

if __name__ == "__main__":
    entry_point()
