"""The database: engines, schema, views, indexes, partitions, locks, bulk writes, people, progress."""
