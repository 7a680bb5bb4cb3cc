"""Subscribers and what they do: signups, consent, fields, segments, events and
engagement, imports and the sales handoff. Imports the base and store."""
