"""Running per-job totals, the durable ledger, and the reports read from it."""
