"""`capserve` subcommands that belong to the server itself (not measurement tools)."""
