"""A CloudStack API simulator: CloudStack's wire behaviour without Java, MySQL or hypervisors.

Fidelity is the point: where CloudStack is strict, so is this server, so a client that
passes here behaves on a real cloud. See ../../../README.md for the catalog and faults.
"""
