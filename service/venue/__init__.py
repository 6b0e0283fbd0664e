"""The venue agency's side of the service (一小区一码): its QR-signing key, its register of venues and its
journal of check-ins, delivered to RUN/data/venues/ as the venue node reads them."""
