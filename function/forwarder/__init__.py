"""Forwarding of Pub/Sub push messages to Mixpanel's Import API.

The package is deployed with `main.py` as the function's source. `config`
reads the environment. `envelope` and `records` decode a push request, `hook`
calls the transform in `transform.py` on each record (unless it is the
default, which returns the record), `privacy` drops and hashes personal
properties, and `events` checks and normalises each event.
`batching` groups the events into import requests, `mixpanel` and `pubsub`
call the two APIs, and `handler` ties the steps together.
"""
