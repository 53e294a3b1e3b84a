"""The `crm-inbox` command: the composition root wiring sync, crm, signatures and the API."""
