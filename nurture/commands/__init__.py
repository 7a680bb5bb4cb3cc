"""`nurture` subcommands, grouped by what they touch."""
