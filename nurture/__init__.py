"""nurture: email nurture sequences and newsletters from YAML and Jinja in git."""

__version__ = "0.1.0"
