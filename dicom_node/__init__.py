"""DICOM networking of the node: the listener (:mod:`.scp`), the spool (:mod:`.spool`), and the
sender (:mod:`.scu`).

Modules: :mod:`.contexts` (what is negotiated), :mod:`.uids` (UID validation), :mod:`.intake`
(the C-STORE decision sequence), :mod:`.enqueuer` (publishing jobs after commit).
"""
