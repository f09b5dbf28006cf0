"""YAML configs of the vision domain, one per reproduction."""
