"""The HTTP API: routes, upload streaming, problem+json errors."""
