"""YAML configs of the bio domain, one per reproduction."""
