"""The operator console: a web interface to the node for the people who run it.

- :mod:`dicom_node.console.app`: the console assembled, its routers behind Starlette's
  authentication;
- :mod:`dicom_node.console.routes`: one router per resource (auth, pages, jobs, models);
- :mod:`dicom_node.console.access`: who may call a route (the session backend, ``requires``);
- :mod:`dicom_node.console.context`: what the routers share; reading and auditing an action;
- :mod:`dicom_node.console.view`: the Jinja2 templates (``templates/``), their filters and the
  one-shot messages; a little script and a style sheet in ``static/``;
- :mod:`dicom_node.console.auth`: session cookies, CSRF tokens, the login rate limit;
- :mod:`dicom_node.console.queries`: the dashboard's figures and job searches;
- :mod:`dicom_node.console.render`: the overlay as PNG and the SR as a table, patient data hidden;
- :mod:`dicom_node.console.registry`: model versions and their cards; activation.

Users and sessions are :mod:`store.users`; the actions are :mod:`store.actions`, shared with the
command line. :func:`dicom_node.ops.server.start_monitoring` serves the console.
"""
