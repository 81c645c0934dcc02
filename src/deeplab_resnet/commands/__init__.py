"""One module per ``deeplab`` subcommand: ``add_arguments(parser)`` and ``run(args)``."""
