"""The seed notebook's scenarios, offline; imported only by ``asynctrack demo`` and tests."""
