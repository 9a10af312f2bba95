"""schemathesis against authsvc's own OpenAPI document: see __main__.py."""
