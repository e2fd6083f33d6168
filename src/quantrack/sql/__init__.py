"""quantrack's database schema, as numbered migrations (``NNN_name.sql``) applied in order."""
