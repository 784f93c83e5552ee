"""Sub-commands of ``imf-kg``: one module each with ``add_parser(subparsers)``."""
