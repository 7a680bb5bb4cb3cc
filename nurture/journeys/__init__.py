"""Who gets which step when: the planner (goal, gate, window, daily cap), send windows,
newsletter days and due steps (a whole simulated journey, which runs send-due itself,
is nurture/simulate.py). Imports people, content and store."""
