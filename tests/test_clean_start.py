"""A clean install prints nothing but csdeploy's own output: no third-party warnings."""

from __future__ import annotations

import subprocess
import sys

from tests.support.cli import REPO


def test_importing_the_ssh_layer_prints_no_warning() -> None:
    """asyncssh's import warns about DSA with cryptography >= 44 (ten lines before every
    command); csdeploy silences exactly that warning. `-W default` shows every warning that
    is not filtered, as a user's Python would."""
    code = "import cloudstack_deploy.rollout.hosts, cloudstack_deploy.provision.ssh_wait"
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr


def test_other_warnings_still_show() -> None:
    """The filter is narrow: a warning of csdeploy's own (or any other module's) is not hidden."""
    code = "import cloudstack_deploy, warnings; warnings.warn('DSA is deprecated here', UserWarning)"
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert "DSA is deprecated here" in proc.stderr
