"""Our own coding scheme designator, for concepts no standard code names.

PS3.16 (8.2, "Private Coding Schemes") lets an application use a designator beginning with
``99`` for codes of its own. The SR's measurement concept and the audit messages' event type codes
(console and command-line actions) both use this one, so it is defined once, below both.
"""

LOCAL_SCHEME = "99DEEPCOVID"
"""Coding Scheme Designator of the node's own codes (the SR describes it in its Coding Scheme
Identification Sequence)."""
