"""Pure command builders: every docker / kamal-proxy invocation lives in exactly one place."""
