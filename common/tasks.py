"""Names the broker knows: the analysis task and its queue.

Publishers send the task by this name (``send_task``) and the worker registers its task under it,
so the listener enqueues work without importing the worker's code.
"""

ANALYSE_TASK = "worker.tasks.analyse_instance"
"""Celery name of the task that analyses one job (argument: the job id)."""

ANALYSIS_QUEUE = "deepcovid.analysis"
"""The queue analysis tasks go to."""
