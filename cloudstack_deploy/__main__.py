"""`python -m cloudstack_deploy` is `csdeploy`."""

from .cli import main

main()
