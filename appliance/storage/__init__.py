"""The database: the only sqlite-utils importer and the one place that knows the schema."""

from appliance.storage.db import CallRecord, Storage

__all__ = ["CallRecord", "Storage"]
