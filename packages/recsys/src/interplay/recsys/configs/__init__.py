"""YAML configs of the recsys domain, one per reproduction."""
