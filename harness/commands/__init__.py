"""One module per `bench` subcommand; each exposes register(subparsers) and sets args.func."""
