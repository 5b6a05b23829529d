"""What to reach: the option table, ssh_options, ssh_config evaluation, and the resolved Target."""
