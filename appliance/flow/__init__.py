"""Call flows: the YAML language admins write (schema), its loader and checker, and the engine."""
