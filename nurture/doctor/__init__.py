"""`nurture doctor`: what a mailbox provider checks before it trusts our mail (SPF,
DKIM, DMARC, one-click unsubscribe, the emails themselves, complaint rates), each as
pass, warn or fail with its fix. Stands beside send_due and health: it may import the
domain (delivery, broadcast, people, store), nothing imports it but the command line."""
