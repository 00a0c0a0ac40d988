"""Deadlines: how long jobs will take, when the queue will have run them, and what to do when a
campaign's deliverables would miss its deadline.

- `campaign`: queue.yaml's `deadline:` and its storage (one row per campaign);
- `estimate`: a job's expected duration and where it comes from (its progress, like jobs that
  finished, its `expected:` hint), with the work it does (rows x epochs x trials) as the scale;
- `replay`: the queue played forward on the workers that are up, in claim order, with the
  worker's own GPU placement: each job's expected start and end;
- `policy`: pure decisions for campaigns at risk: urgent path jobs, held jobs, tune cut-offs;
- `planner`: loads the queue, runs the policy, writes its decisions (the worker calls it);
- `verdict`: the words `sched status`, `sched forecast` and `submit --dry-run` print.

Times inside `replay` and `policy` are seconds from "now" (floats), so tests and
bench/deadline_sim.py drive them with a simulated clock.
"""
