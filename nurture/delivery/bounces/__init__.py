"""Bounces and complaints after the send: read them (DSNs, odd bounces, ARF reports,
provider webhooks), match each to its delivery, and apply the suppression policy."""
