"""The leaf every service shares: settings, logging, job states, SOP class lists, UID rules.

It imports nothing else of the project (an import-linter contract keeps it so), which is what lets
the listener, the worker, the job store and the command line all depend on it without circles.
"""
