"""Floor 0: mechanisms every app shares: the job row (jobs.py), application errors (errors.py), roles and role
checks (roles.py, permissions.py), admin building blocks. Imports no app of the project."""
