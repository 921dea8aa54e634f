"""Sans-I/O HTTP wire cores (``h1``) and the events they produce (``events``)."""
