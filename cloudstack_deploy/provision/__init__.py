"""Provisioning: turn a blueprint into cloud resources, and wait until the hosts answer."""
