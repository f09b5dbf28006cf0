"""YAML configs of the tabular domain, one per reproduction."""
