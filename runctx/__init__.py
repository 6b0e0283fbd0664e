"""The run's context, shared by every party: its scenario (seed, dates, randomness, clock), its file layout
and PKI bootstrap, and how its files are written."""
