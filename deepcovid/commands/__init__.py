"""Command groups of the ``deepcovid`` CLI, one module per group (see :mod:`deepcovid.cli`)."""
