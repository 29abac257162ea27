"""ABI event decoding: raw log tables -> one table per event, column by column."""
