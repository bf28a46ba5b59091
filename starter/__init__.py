"""What backend services use: the Python client API (``starter.client``) and the CLI."""
