"""Inference's actions, one module per concern: `scoring` (the pool, worker side), `selection` and `cold_start`
(the labeling queue's order), `refresh` (re-order now), `settings` (the admin's active-learning settings),
`starts` (what the buttons enqueue) and `hooks` (receivers of the lower floors' signals). Only `starts` and
`hooks` import inference.tasks, which imports the others."""
