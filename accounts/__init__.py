"""Floor 1: users, login, API tokens, and the role groups. Imports only core."""
