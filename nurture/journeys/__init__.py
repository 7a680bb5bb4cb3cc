"""Who gets which step when: enrolment, the planner (goal, gate, window, daily cap), send
windows, newsletter days, due steps and simulation. Imports people, content and store."""
