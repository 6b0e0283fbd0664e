"""The citizen app's parts: one-time codes by SMS, the identity-check batcher, and code issuance."""
