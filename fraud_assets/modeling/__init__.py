"""``fraud-assets models``: every model under every protocol, compared on the real data."""
