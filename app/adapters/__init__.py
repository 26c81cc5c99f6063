"""Adapters: the small interfaces the services use for Redis, Socket.IO, Stripe and Twilio."""
