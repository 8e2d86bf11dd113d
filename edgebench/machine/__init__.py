"""The host: one probe, device profiles, the environment record of a run."""
