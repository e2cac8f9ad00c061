"""``python -m mlx_textgen``: the same command line as the ``mlx_textgen`` script."""

from mlx_textgen.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
