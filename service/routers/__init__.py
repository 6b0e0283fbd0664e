"""One router per party; each writes only its owner's files."""
