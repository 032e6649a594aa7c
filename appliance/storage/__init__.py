"""The database: the only sqlite-utils importer and the one place that knows the schema."""

from appliance.storage.db import AgentEvent, CallRecord, Storage, UserRecord

__all__ = ["AgentEvent", "CallRecord", "Storage", "UserRecord"]
