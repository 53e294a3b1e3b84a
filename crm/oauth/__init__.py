"""Mailboxes connected by OAuth2 consent: consents in flight (`consent`), the accounts and their
grants (`accounts`), the tokens at rest and the refresh protocol's database steps (`tokens`).
The network side (token endpoint, revocation) is `sync.oauth`; the flows are `sync.oauth_flow`."""
