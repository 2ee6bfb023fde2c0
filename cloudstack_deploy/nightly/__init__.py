"""`csdeploy nightly`: an ephemeral environment per night, checked, reported as JUnit, torn down.

`checks` parses and runs the checks, `report` holds the outcome (JUnit XML, JSON), `run`
drives the phases through the service calls `service.nightly` hands it.
"""
