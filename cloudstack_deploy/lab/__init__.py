"""The lab: a local CloudStack simulator (and, later, real hosts) for trying and testing."""
