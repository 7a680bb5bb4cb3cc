"""Read-only numbers for marketers: per-step stats, funnels, scores, and the HTML report.
Imports people, journeys, content and store; changes nothing."""
