"""Errors raised by the indexing layer; the service maps each one to an HTTP status once."""

from __future__ import annotations


class IndexingError(Exception):
    """Base class: every error here carries a message fit to show a client."""


class InvalidCollectionName(IndexingError, ValueError):
    """The name would not be a safe single path component."""


class CollectionNotFound(IndexingError, LookupError):
    """No collection of that name exists."""


class CollectionExists(IndexingError):
    """A collection of that name exists already (create is not an upsert)."""


class CollectionUnavailable(IndexingError):
    """The collection exists but cannot serve: its snapshot is corrupt or does not match its store."""


class InvalidDocument(IndexingError, ValueError):
    """A document, vector or filter sent by a client is malformed (the message names the field)."""


class DimensionMismatch(InvalidDocument):
    """A vector's length differs from the collection's dimension."""
