"""Training's actions: `runs` (an admin starts and cancels retrains; enqueues training.tasks), `execute` (the
worker trains and registers a version) and `versions` (activation). Reaping dead runs is training.reaping."""
