"""Development helpers: a generated webhook secret, and signed sample events sent to the local gateway."""
