"""What marketers write: sequences in YAML (with line marks and durations), templates in a
sandboxed Jinja with CSS inlining and text parts, the custom fields a workspace declares,
and their validation. Imports the base only: nothing here touches a database."""
