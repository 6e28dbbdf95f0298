"""The version of charlstm: the one place it is written (pyproject.toml reads it at build time;
``charlstm.__version__`` and ``charlstm --version`` import it)."""

__version__ = "0.2.0"
