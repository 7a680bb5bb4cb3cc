"""From a claimed delivery to an email on the wire: the delivery state machine and send
loop, composing, MIME, signed links, transports and rate limits. Imports content,
people and store."""
