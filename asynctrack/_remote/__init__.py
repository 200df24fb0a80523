"""The application side of the worker process: the client engine, its shipper, spawn and restart."""
