"""The HTTP API and the hosted registration pages: how storefronts in any language, and customers
in a browser, reach ``starter.client.RegistrationClient``.

``python -m starter.http`` serves them (``REGISTRATION_API_*`` settings); ``make run`` starts it
beside the worker. The process keeps no state of its own besides the rate limits' counts (in
Redis when several run), so any number of replicas can serve one task queue. See docs/api.md.
"""
