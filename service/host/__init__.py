"""The host app's parts: the declaration form's checks, the police register, and the deliveries to the
police agency's data."""
