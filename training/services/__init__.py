"""Training's actions: `runs` (an admin starts and cancels retrains; enqueues training.tasks), `execute` (the
worker trains and registers a version) and `versions` (activation). Dead runs are failed by core's
periodic reaper (core.tasks)."""
