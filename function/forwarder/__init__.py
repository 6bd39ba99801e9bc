"""Forwarding of Pub/Sub push messages to Mixpanel's Import API.

The package is deployed with `main.py` as the function's source. Its modules
split the work by concept: `config` reads the environment, `envelope` and
`records` decode a push request, `events` checks and normalises each event,
`batching` groups events into import requests, `mixpanel` and `pubsub` talk
to the two APIs, and `handler` ties them together.
"""
