"""From a claimed delivery to an email on the wire: the delivery state machine (states,
statements) and the send loop (sending, prepare), composing (compose, issues), MIME,
signed links, transports, rate limits and telling sales (handoffs). Imports journeys
(an enrolment moves on when its email is sent), people, content and store; never
Dramatiq: queue.py hands in the rate limiters."""
