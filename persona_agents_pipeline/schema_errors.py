"""The error for a database whose schema or data this version cannot work with.

Its own module because both the store and the migrations raise it, and the migrations must not import the
store (the store runs them).
"""


class SchemaError(RuntimeError):
    """The database's schema or data keeps this version from working; the message says what to do."""
