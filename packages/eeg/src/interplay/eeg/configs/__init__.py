"""YAML configs of the eeg domain, one per reproduction."""
