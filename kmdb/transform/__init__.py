"""Bytes to records to rows: parsing a line, the user's filters, alias rules, row building (pure)."""
