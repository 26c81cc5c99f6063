"""In-process fakes of external HTTP APIs (Twilio, Stripe) that the real SDKs talk to in tests."""
