"""Operations endpoints of the node: health checks and Prometheus metrics over HTTP.

- :mod:`dicom_node.ops.counters`: what only the node process knows (associations, C-STORE
  statuses), counted in memory;
- :mod:`dicom_node.ops.health`: liveness and readiness checks (database, broker, spool space,
  model);
- :mod:`dicom_node.ops.metrics`: job, queue, outbox and latency figures read from the job store
  at scrape time (workers are separate processes; the store is what they share);
- :mod:`dicom_node.ops.server`: the HTTP server thread that serves all of it
  (:func:`~dicom_node.ops.server.start_monitoring`).
"""
