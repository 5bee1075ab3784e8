"""Store tests: the contract both backends pass, and what only PostgreSQL does."""
