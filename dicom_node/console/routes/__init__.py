"""The console's routers, one per resource; each module's ``routes(ctx)`` lists its routes.

- :mod:`.auth`: ``/login`` (form and check), ``/logout``;
- :mod:`.pages`: the dashboard (``/``, live part ``/live/dashboard``) and ``/settings``;
- :mod:`.jobs`: ``/jobs``, one job, its overlay and live part, and the actions on jobs and
  deliveries (reanalyse, resend, retry failed deliveries);
- :mod:`.studies`: ``/studies`` and one study (its study-level results, images and SR);
- :mod:`.models`: ``/models`` and the confirmed activation of a version.

Who may call a route is said on it (:func:`dicom_node.console.access.requires`).
"""
