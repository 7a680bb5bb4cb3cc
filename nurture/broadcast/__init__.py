"""Newsletters (broadcasts): one issue to every active subscriber of a segment, once.

- `source`: a Markdown file with front matter, or a template, read into an `Issue`;
- `audience`: who gets it (active, not suppressed, in the segment), in id order;
- `core`: the broadcast row's states (draft, scheduled, sending, sent, cancelled);
- `fanout`: deliveries written in batches from a checkpoint, handed to the same queue as
  sequence emails; `fan_out_due_broadcasts` is what `send-due` runs;
- `compose`: the email (through the one message builder) and the web version;
- `archive`: the public archive's issues, as their web versions show them;
- `report`: read-only numbers for `broadcast list` and `broadcast status`.

Imports delivery, people, content and store. See docs/broadcasts.md.
"""
