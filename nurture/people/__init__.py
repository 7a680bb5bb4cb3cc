"""Subscribers and what they do: signups, consent, fields, tags, segments, events and
engagement, enrolment in a sequence, imports and recording the sales handoff. Imports
the base, content and store."""
