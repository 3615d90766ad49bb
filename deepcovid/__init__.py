"""deepcovid-node: command line front door and settings shared by every service."""

__version__ = "0.1.0"
