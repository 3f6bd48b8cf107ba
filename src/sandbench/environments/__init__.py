"""Isolation environments: each knows how to start, reach, account for and stop a sandbox."""
