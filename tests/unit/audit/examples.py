"""One example of every audit event, shared by the audit package's tests."""

from __future__ import annotations

from audit import events as ev

STUDY = "1.2.826.0.1.3680043.8.498.1"
CR = "1.2.840.10008.5.1.4.1.1.1"
PEER = "10.1.5.5"
EVENTS: dict[str, ev.AuditEvent] = {
    "association accepted": ev.AssociationAccepted(
        calling_ae="PACS1", called_ae="DEEPCOVID", peer_address="10.1.20.31", peer_port=4242
    ),
    "association rejected": ev.AssociationRejected(
        calling_ae="INTRUDER", called_ae="DEEPCOVID", peer_address="10.1.9.14", peer_port=4243,
        reason="calling AE title not allowed",
    ),
    "tls failed": ev.TlsHandshakeFailed(
        peer_address="::1", peer_port=None,
        reason="TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE",
    ),
    "received": ev.InstancesReceived(
        calling_ae="PACS1", peer_address="10.1.20.31", study_instance_uid=STUDY,
        sop_classes={CR: 1}, patient_id="PAT-1234",
    ),
    "sent": ev.InstancesSent(
        destination_ae="PACS1", destination_host="pacs.hospital.local", study_instance_uid=STUDY,
        sop_classes={"1.2.840.10008.5.1.4.1.1.88.22": 1, "1.2.840.10008.5.1.4.1.1.7": 1},
        patient_id="PAT-1234",
    ),
    "given up": ev.InstancesSent(
        destination_ae="PACS1", destination_host="10.1.20.40", study_instance_uid=STUDY,
        sop_classes={"1.2.840.10008.5.1.4.1.1.30": 1}, patient_id=None,
        failure="not delivered after 12 attempts: connection refused",
    ),
    "purged": ev.StudyDeleted(study_instance_uid=STUDY, sop_classes={CR: 1}, patient_id=None),
    "started": ev.ApplicationStarted(),
    "stopped": ev.ApplicationStopped(),
    "login": ev.LoginSucceeded(user="alice", role="admin", peer_address=PEER),
    "login failed": ev.LoginFailed(
        user="mallory", peer_address="10.1.5.6", reason="wrong password"
    ),
    "logout": ev.LoggedOut(user="alice", role="admin", peer_address=PEER),
    "action on a study": ev.UserAction(
        user="alice", role="admin", via="console", peer_address=PEER, action="reanalyse",
        target="1.2.3.4", reason="job 2 queued", study_instance_uid=STUDY,
    ),
    "refused action": ev.UserAction(
        user="victor", role="viewer", via="console", peer_address=PEER, action="resend",
        target="1.2.3.4", reason="the viewer role may not run actions", accepted=False,
    ),
    "other action": ev.UserAction(
        user="alice", role="admin", via="console", peer_address=PEER, action="activate model",
        target="v2", reason="version v2 is now the active model",
    ),
    "cli action": ev.UserAction(
        user="root", role=None, via="cli", peer_address=None, action="retry-failed",
        target="all failed deliveries", reason="3 deliveries start over",
    ),
    "account added": ev.AccountChanged(user="root", via="cli", action="add", account="alice"),
}  # fmt: skip
