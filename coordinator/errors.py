"""Why the matching stopped: errors the coordinator raises before anything unsafe is sent or kept."""


class MatchingError(RuntimeError):
    """The matching could not be completed safely: a bad manifest, proof, index or budget."""


class ManifestError(MatchingError):
    """A node's manifest does not verify against the identity list or does not fit the epoch."""


class BudgetError(MatchingError):
    """The queries planned for a partition exceed the budget the node has left; nothing was sent."""


class IndexIntegrityError(MatchingError):
    """An index chunk or a whole index does not match its digest or is malformed."""
