"""HTTP edge: routes, dependencies and the error table; no model execution happens here."""
