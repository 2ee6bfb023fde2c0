"""The CloudStack facade: configuration, one shared async session, retries, job waits.

Thin on purpose: CloudStack's own command and field names go through unchanged.
"""

from .client import Cloud, CloudError, CloudUnavailable, JobFailed, StillListed
from .config import CloudConfig, read_cloud_config

__all__ = [
    "Cloud",
    "CloudConfig",
    "CloudError",
    "CloudUnavailable",
    "JobFailed",
    "StillListed",
    "read_cloud_config",
]
