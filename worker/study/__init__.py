"""The study-level result: one SR and one Key Object Selection per settled study.

:mod:`worker.study.rule` decides the study finding from the images' outcomes,
:mod:`worker.study.documents` builds the SR and the KOS, and :mod:`worker.study.watcher` finds
studies that have settled (quiet for ``study_settle_s``) and issues their result once.
"""
