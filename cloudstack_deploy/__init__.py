"""csdeploy: stand up application environments on Apache CloudStack and deploy to them."""

__version__ = "0.1.0"
