"""Online features for the v1 request path: stores, local cache, gathered lookups, the join."""
