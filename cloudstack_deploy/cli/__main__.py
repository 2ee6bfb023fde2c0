"""`python -m cloudstack_deploy.cli` is `csdeploy` too."""

from . import main

main()
