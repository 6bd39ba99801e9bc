"""Local stand-ins for Mixpanel's Import API and Pub/Sub, served on 127.0.0.1."""
