"""The audit trail: one event vocabulary (:mod:`audit.events`) and one :func:`record` that
hands each event to the sinks configured at start-up -- the JSON audit log
(:mod:`audit.sinks.json_log`) and DICOM audit messages over syslog to the site's Audit Record
Repository (:mod:`audit.sinks.syslog`, PS3.15 A.5 / IHE ATNA, built by :mod:`audit.atna` from
the model in :mod:`audit.messages`).

It sits below the services (the listener, the worker, the console and the commands all audit)
and beside the job store, which reports what retention deleted through a callback.
"""

from audit.recorder import Recorder, close, configure, current, open_recorder, record

__all__ = ["Recorder", "close", "configure", "current", "open_recorder", "record"]
