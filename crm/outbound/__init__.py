"""Outgoing mail (issue 10): compose/reply/forward (`compose`), the durable send queue and the
mail log (`queue`), signed Message-IDs (`ids`), header checks (`headers`), views (`views`)."""
